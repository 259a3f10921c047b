"""The byte pump every transfer feeds: batching, redaction, the streaming summary, the
sink, progress.

Whatever way the snapshot leaves the process (inspector chunks, a followed file), its
bytes go through one ``BytePump``, which ends in the ``CaptureResult``. With
``CaptureOptions.redact`` the pump's first stage is a :class:`Redactor`: the summary and
the sink only ever see the redacted bytes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from heapsnap._units import MiB
from heapsnap.engine._session import Reporter
from heapsnap.engine._summary import SummaryWorker
from heapsnap.engine._types import CaptureOptions, CaptureResult, PreflightEstimate, Progress, TargetInfo
from heapsnap.errors import CaptureError, SnapshotFormatError
from heapsnap.sinks.base import Artifact, Sink

if TYPE_CHECKING:
    from heapsnap.analysis.redact import Redactor
    from heapsnap.analysis.stream import SnapshotSummary

_REPORT_EVERY_BYTES = 4 * MiB
_BATCH_BYTES = 1 * MiB


_NOT_REDACTED = "The snapshot could not be redacted, so none was stored"


class _Redaction:
    """The pump's redaction stage; numpy is imported with the first bytes (V8 is at work
    by then), not before the target is touched."""

    def __init__(self) -> None:
        self._redactor: Redactor | None = None

    def feed(self, data: bytes) -> bytes:
        if self._redactor is None:
            from heapsnap.analysis.redact import Redactor

            self._redactor = Redactor()
        try:
            return self._redactor.feed(data)
        except SnapshotFormatError as error:
            raise CaptureError(f"{_NOT_REDACTED}: {error}") from error

    def finish(self) -> bytes:
        """The last bytes; raises :class:`CaptureError` unless the whole snapshot was redacted."""
        if self._redactor is None:
            raise CaptureError(f"{_NOT_REDACTED}: it was empty.")
        try:
            return self._redactor.finish()
        except SnapshotFormatError as error:
            raise CaptureError(f"{_NOT_REDACTED}: {error}") from error


class BytePump:
    """Takes one snapshot's bytes in order and hands them on in batches of ``_BATCH_BYTES``
    to the redaction (if asked), the summary and the sink; ``commit`` ends it (the caller
    aborts the sink on failure)."""

    def __init__(
        self,
        sink: Sink,
        report: Reporter,
        options: CaptureOptions,
        *,
        phase: str = "transferring",
        started: float = 0.0,
    ) -> None:
        self.sink = sink
        self.report = report
        self.summary = SummaryWorker(options.summary_top)
        self.redacted = options.redact
        self._redaction = _Redaction() if options.redact else None
        self.bytes_sent = 0  # handed to the sink
        self.received = 0
        self.batch = bytearray()
        self.started = started
        self.first_chunk: float | None = None
        self.last_chunk: float | None = None
        # When the target was done: the end of generation when known, else the last chunk.
        self.generated: float | None = None
        # Bytes can flow while V8 still writes (a followed file): then they are "generating".
        self.phase = phase
        self.warnings: list[str] = []

    async def feed(self, data: bytes) -> None:
        """Take one piece of the snapshot as it arrives.

        An exec stream through the API server comes in 32 KiB frames, and each piece costs
        the summary and the sink a fixed overhead: batching cut a pod capture's tail by a third.
        """
        now = time.monotonic()
        if self.first_chunk is None:
            self.first_chunk = now
        self.last_chunk = now
        self.received += len(data)
        if self.batch or len(data) < _BATCH_BYTES:
            self.batch += data
            if len(self.batch) >= _BATCH_BYTES:
                await self.flush()
            return
        await self._pass_on(data)

    async def flush(self) -> None:
        if self.batch:
            data, self.batch = bytes(self.batch), bytearray()
            await self._pass_on(data)

    async def _pass_on(self, data: bytes) -> None:
        if self._redaction is not None:
            data = self._redaction.feed(data)
            if not data:
                return
        await self.summary.feed(data)
        await self.sink.write(data)
        before = self.bytes_sent
        self.bytes_sent += len(data)
        if self.bytes_sent // _REPORT_EVERY_BYTES != before // _REPORT_EVERY_BYTES:
            if self.phase == "generating":
                written = f"{self.bytes_sent // MiB:,} MiB written"
                await self.report(Progress("generating", bytes_sent=self.bytes_sent, message=written))
            else:
                await self.report(Progress("transferring", percent=100.0, bytes_sent=self.bytes_sent))

    async def _finish_summary(self) -> SnapshotSummary | None:
        try:
            return await self.summary.finish()
        except Exception as error:  # the summary is a bonus: never lose the artifact for it
            self.warnings.append(f"Summary skipped: {error}")
            return None

    async def commit(
        self, target: TargetInfo, preflight: PreflightEstimate | None, started: float
    ) -> CaptureResult:
        """Store the artifact and say what was captured; the session's warnings are the caller's."""
        await self.flush()
        if self._redaction is not None:
            redaction, self._redaction = self._redaction, None
            await self._pass_on(redaction.finish())
        await self.report(Progress("transferring", percent=100.0, bytes_sent=self.bytes_sent))
        artifact: Artifact = await self.sink.commit()
        ended = time.monotonic()
        summary = await self._finish_summary()
        result = CaptureResult(
            target=target,
            artifact=artifact,
            pause_seconds=round((self.generated or self.last_chunk or ended) - self.started, 3),
            transfer_seconds=round(ended - (self.first_chunk or ended), 3),
            total_seconds=round(ended - started, 3),
            summary=summary,
            preflight=preflight,
            warnings=list(self.warnings),
            redacted=self.redacted,
        )
        await self.report(Progress("done", percent=100.0, bytes_sent=self.bytes_sent, message=artifact.uri))
        return result
