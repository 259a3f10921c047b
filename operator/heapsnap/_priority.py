"""CPU priority: heapsnap gives way to the process it captures."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

#: Added to a nice value, up to the lowest priority (19).
NICENESS = 10


def yield_cpu(by: int = NICENESS) -> None:
    """Lower the calling thread's priority by ``by`` nice levels (Linux keeps one per
    thread); threads and processes it starts afterwards inherit it.

    While V8 writes a snapshot it uses one core, and heapsnap, its agent and the storage
    server want more than the other one: given way to, V8 finishes sooner and the target
    resumes sooner, and heapsnap catches up once V8 is done.
    """
    if sys.platform.startswith("linux"):
        me = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + by))
