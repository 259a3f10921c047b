"""Files heapsnap writes are readable by their owner only: a heap snapshot (and what is
made from it: a profile, a report) holds whatever was in the process's memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

MODE = 0o600


def private_open(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing, creating (or truncating) the file 0600 (stricter if
    the umask says so); an existing file is made 0600 too."""
    if mode not in ("wb", "w", "ab", "a"):
        raise ValueError(f"private_open writes only: mode {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, MODE)
    try:
        os.fchmod(fd, os.fstat(fd).st_mode & MODE)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, mode, **kwargs)
