"""The summary's thread gives way to the target, which stays paused until V8 is done."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from heapsnap.engine._summary import SummaryWorker
from heapsnap.errors import SnapshotFormatError


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_summary_thread_runs_below_heapsnap_s_own_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    worker = SummaryWorker(top=5)
    assert worker is not None
    tid = worker._thread.native_id or 0
    deadline = time.monotonic() + 5
    while os.getpriority(os.PRIO_PROCESS, tid) == own and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, own + 10)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the rest of heapsnap is untouched
    with pytest.raises(SnapshotFormatError):  # nothing was fed: no snapshot
        asyncio.run(worker.finish())


def test_a_summary_that_cannot_start_still_takes_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread imports the parser itself; if that fails, the capture must not hang on
    # a full queue: the batches are taken and dropped, and finish() says why.
    monkeypatch.setitem(sys.modules, "heapsnap.analysis.stream", None)  # import raises ImportError
    worker = SummaryWorker(top=5)

    async def feed_then_finish() -> None:
        async with asyncio.timeout(10):
            for _ in range(20):  # more than the queue holds
                await worker.feed(b"{}")
            await worker.finish()

    with pytest.raises(ImportError):
        asyncio.run(feed_then_finish())
