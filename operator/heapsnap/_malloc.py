"""glibc's malloc, told to keep heapsnap's memory small and its buffers warm."""

from __future__ import annotations

import ctypes
import os

from heapsnap._units import MiB

# glibc's mallopt parameter numbers, each with the variable that sets it from outside.
_SETTINGS = {
    "MALLOC_ARENA_MAX": (-8, 2),
    "MALLOC_MMAP_THRESHOLD_": (-3, 2 * MiB),
    "MALLOC_TRIM_THRESHOLD_": (-1, 8 * MiB),
}


def tune_malloc() -> list[str]:
    """Set glibc's malloc for a process that streams megabytes; call it before any thread starts.

    - Two arenas: glibc gives threads arenas of their own (up to 8 per core), and the API
      client's, the S3 upload's and the summary's threads each kept freed megabytes in
      theirs. With two, the operator's peak RSS in a 186 MiB capture fell from 146 to 142 MiB.
    - Blocks under 2 MiB from the heap, and up to 8 MiB of free heap kept: by default
      glibc maps each 1 MiB batch afresh and gives it back when freed, so the kernel
      faulted in and zeroed every page of the snapshot three times over. Streaming a
      410 MiB snapshot through the summary to a file cost 3.6 s of CPU, 2.2 s with these.

    A variable set in the environment wins over its setting here. Returns the variables
    set; other C libraries are left alone.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return []
    return [
        name
        for name, (parameter, value) in _SETTINGS.items()
        if name not in os.environ and mallopt(parameter, value)
    ]
