"""The streaming summary, fed on a thread of its own while the capture moves bytes."""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref

from heapsnap.analysis.stream import SnapshotSummary, StreamingSummary

# The summary's temporaries scale with the piece fed: small pieces keep RSS low.
_PIECE = 128 << 10
# At most this many delivered batches wait for the summary (1 MiB each at most).
_QUEUED = 4
_IDLE_CHECK_SECONDS = 1.0


class SummaryWorker:
    """Parses on a thread, so parsing overlaps reading, hashing and storing (which
    release the GIL) on a second core. The thread ends on ``finish()``, or within a
    second of this object being dropped after a failed capture.
    """

    def __init__(self, summary: StreamingSummary) -> None:
        self._summary = summary
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED)
        self.error: Exception | None = None
        owner = weakref.ref(self)
        self._thread = threading.Thread(
            target=_feed_forever, args=(summary, self._queue, owner), name="heapsnap-summary", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, top: int) -> SummaryWorker | None:
        summary = StreamingSummary(top=top)
        try:
            summary.feed(b"")
        except NotImplementedError:
            return None
        return cls(summary)

    async def feed(self, data: bytes | None) -> None:
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, data)

    async def finish(self) -> SnapshotSummary:
        """The summary of everything fed; raises what parsing raised."""
        await self.feed(None)
        await asyncio.to_thread(self._thread.join)
        if self.error is not None:
            raise self.error
        return self._summary.finish()


def _feed_forever(
    summary: StreamingSummary, pending: queue.Queue[bytes | None], owner: weakref.ref[SummaryWorker]
) -> None:
    while True:
        try:
            data = pending.get(timeout=_IDLE_CHECK_SECONDS)
        except queue.Empty:
            if owner() is None:
                return
            continue
        if data is None:
            return
        worker = owner()
        if worker is None:
            return
        if worker.error is None:
            try:
                for offset in range(0, len(data), _PIECE):
                    summary.feed(data[offset : offset + _PIECE])
            except Exception as error:  # reported by finish(); the artifact never depends on it
                worker.error = error
        del worker
