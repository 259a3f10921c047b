"""A local file sink: a temp file beside the target, renamed into place on commit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

from heapsnap.errors import StorageAccessDenied, StorageError
from heapsnap.sinks.base import Artifact

_FLUSH_BYTES = 1 << 20


class FileSink:
    """Writes to ``path`` (gzip-compressed when asked); nothing is left at ``path`` on abort."""

    def __init__(self, path: Path, *, gzip: bool = False) -> None:
        self.path = Path(path)
        self.gzip = gzip
        self._file: BinaryIO | None = None
        self._temp: Path | None = None
        self._pending = bytearray()
        self._digest = hashlib.sha256()
        self._size = 0
        self._stored = 0
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        self._done = False

    def _open(self) -> BinaryIO:
        if self._file is None:
            directory = self.path.parent
            try:
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=directory)
            except FileNotFoundError as error:
                raise StorageError(
                    f"Directory {directory} does not exist: create it or choose another path."
                ) from error
            except PermissionError as error:
                raise StorageAccessDenied(f"Cannot write to {directory}: choose a writable path.") from error
            self._temp = Path(name)
            self._file = os.fdopen(fd, "wb")
        return self._file

    async def prepare(self) -> None:
        """Create the temp file now, so a bad path fails before the target is touched."""
        self._open()

    def _store(self, data: bytes) -> None:
        file = self._open()
        if self._compressor is not None:
            data = self._compressor.compress(data)
        if data:
            self._digest.update(data)
            self._stored += len(data)
            file.write(data)

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        self._pending += data
        if len(self._pending) >= _FLUSH_BYTES:
            block, self._pending = bytes(self._pending), bytearray()
            await asyncio.to_thread(self._store, block)

    def _finish(self) -> None:
        self._store(bytes(self._pending))
        self._pending = bytearray()
        file = self._open()
        if self._compressor is not None:
            tail = self._compressor.flush()
            self._digest.update(tail)
            self._stored += len(tail)
            file.write(tail)
        file.flush()
        os.fsync(file.fileno())
        file.close()
        assert self._temp is not None
        os.replace(self._temp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def commit(self) -> Artifact:
        try:
            await asyncio.to_thread(self._finish)
        except OSError as error:
            await self.abort()
            raise StorageError(f"Writing {self.path} failed: {error}") from error
        self._done = True
        return Artifact(
            uri=str(self.path.resolve()),
            size_bytes=self._size,
            compressed_bytes=self._stored if self.gzip else None,
            sha256=self._digest.hexdigest(),
        )

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
