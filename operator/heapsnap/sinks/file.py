"""A local file sink: a temp file beside the target, renamed into place on commit."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from heapsnap.errors import StorageAccessDenied, StorageError
from heapsnap.sinks.base import Artifact, StoredBytes

_FLUSH_BYTES = 1 << 20


class FileSink:
    """Writes to ``path`` (gzip-compressed when asked); nothing is left at ``path`` on abort."""

    def __init__(self, path: Path, *, gzip: bool = False) -> None:
        self.path = Path(path)
        self.gzip = gzip
        self._file: BinaryIO | None = None
        self._temp: Path | None = None
        self._pending = bytearray()
        self._bytes = StoredBytes(gzip=gzip)
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
        file.write(self._bytes.encode(data))

    async def write(self, data: bytes) -> None:
        if not self._pending and len(data) >= _FLUSH_BYTES:
            await asyncio.to_thread(self._store, data)  # a whole batch: no copy
            return
        self._pending += data
        if len(self._pending) >= _FLUSH_BYTES:
            block, self._pending = bytes(self._pending), bytearray()
            await asyncio.to_thread(self._store, block)

    def _finish(self) -> None:
        self._store(bytes(self._pending))
        self._pending = bytearray()
        file = self._open()
        file.write(self._bytes.finish())
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
        return self._bytes.artifact(str(self.path.resolve()))

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
