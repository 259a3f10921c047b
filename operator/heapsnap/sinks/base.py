from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Artifact:
    """A stored snapshot. ``sha256`` is of the stored bytes (compressed when gzip is on)."""

    uri: str
    size_bytes: int
    compressed_bytes: int | None
    sha256: str


class Sink(Protocol):
    """Receives a snapshot's bytes in order; exactly one of ``commit`` or ``abort`` ends it.

    A sink never leaves a partial artifact behind: ``abort`` removes what was written
    (a temp file, a multipart upload).
    """

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> Artifact: ...

    async def abort(self) -> None: ...
