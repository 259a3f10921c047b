"""Which thread of the process is captured: the main thread, or a worker thread.

Each kind says whether the snapshot signal can capture it and how its inspector channel
is reached (the main thread's session itself, or a worker's session inside it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Union

from heapsnap.engine import _inspector
from heapsnap.engine._cdp import CdpChannel, CdpSession
from heapsnap.engine._types import CaptureOptions
from heapsnap.errors import InvalidInput


@dataclass(frozen=True)
class MainThread:
    thread_id: None = None
    # The snapshot signal captures the main thread (and only it).
    signal_ok: bool = True

    def channel(self, cdp: CdpSession, pid: int) -> contextlib.AbstractAsyncContextManager[CdpChannel]:
        return contextlib.nullcontext(cdp)


@dataclass(frozen=True)
class WorkerThread:
    thread_id: int
    signal_ok: bool = False

    def channel(self, cdp: CdpSession, pid: int) -> contextlib.AbstractAsyncContextManager[CdpChannel]:
        """The worker's own session inside ``cdp``, detached on exit."""
        return _inspector.worker_session(cdp, self.thread_id, pid)


TargetKind = Union[MainThread, WorkerThread]  # noqa: UP007 (a runtime alias)


def target_kind(options: CaptureOptions) -> TargetKind:
    """The thread ``options`` ask for; a worker with the signal method is refused."""
    if options.worker is None:
        return MainThread()
    if options.worker < 1:
        raise InvalidInput(f"worker {options.worker}: give a worker thread's threadId (1 or more).")
    if options.method == "signal":
        raise InvalidInput(
            f"worker {options.worker} with the signal method: the snapshot signal captures the main "
            "thread only; use the inspector method (or auto) for a worker thread."
        )
    return WorkerThread(options.worker)
