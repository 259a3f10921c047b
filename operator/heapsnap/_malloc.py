"""glibc's malloc, told to keep heapsnap's memory small."""

from __future__ import annotations

import ctypes
import os

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call it before any thread starts.

    glibc gives threads arenas of their own (up to 8 per core), and the API client's,
    the S3 upload's and the summary's threads each kept freed megabytes in theirs: with
    two arenas the operator's peak RSS during a 186 MiB capture fell from 146 to 142 MiB.
    An explicit ``MALLOC_ARENA_MAX`` wins; other C libraries are left alone.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
