"""How the snapshot leaves the process, one strategy each, all feeding a ``BytePump``.

- ``StreamTransfer``: inspector protocol chunks (nothing is written next to the target);
- ``TempfileTransfer``: V8 writes a file next to the target that the agent unlinks at
  once and streams as it grows;
- ``SignalTransfer``: the snapshot signal, and the file the process writes followed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NoReturn, TypeVar

from heapsnap._agent_exit import AgentExit
from heapsnap._units import MiB
from heapsnap.engine import _preflight
from heapsnap.engine._agent import node_major
from heapsnap.engine._cdp import CdpChannel, CdpClosed, CdpCommandError
from heapsnap.engine._pump import BytePump
from heapsnap.engine._session import CaptureSession, Inspection, Reporter, inspector_failures
from heapsnap.engine._types import CaptureOptions, CaptureResult, Progress
from heapsnap.errors import CaptureError, CaptureTimeout, HeapsnapError, NoScratchSpace, TargetExited
from heapsnap.sinks.base import Sink
from heapsnap.transports.base import CommandResult

T = TypeVar("T")
FILE_BYTES_PER_NODE = 120  # snapshot file size per heap node, with margin (70-121 B measured)
# Under the umask 077, so that the file is created 0600: V8 creates it 0644 under the usual
# umask, readable by every user of the container until the agent unlinks it. The umask is
# the process's: it is put back at once (writeHeapSnapshot blocks the thread meanwhile); a
# worker thread may not set it, and writes under the process's own.
_WRITE_SNAPSHOT = (
    "((m) => {{ let old = null; try {{ old = process.umask(0o077); }} catch (e) {{}}"
    " try {{ return m('v8').writeHeapSnapshot({path}); }}"
    " finally {{ if (old !== null) process.umask(old); }} }})"
    "(globalThis.process.getBuiltinModule ? (n) => process.getBuiltinModule(n) : require)"
)


def _nothing() -> None:
    return None


class StreamTransfer:
    """The snapshot as inspector protocol chunks."""

    name: Literal["stream"] = "stream"

    def __init__(
        self, cdp: CdpChannel, node_major: int, report: Reporter, on_written: Callable[[], None] = _nothing
    ) -> None:
        self.cdp = cdp
        self.node_major = node_major
        self.report = report
        self.on_written = on_written

    async def run(self, pump: BytePump) -> None:
        cdp = self.cdp
        last_percent = -1.0

        async def on_event(method: str, params: dict[str, object]) -> None:
            nonlocal last_percent
            if method == "HeapProfiler.addHeapSnapshotChunk":
                await pump.feed(str(params["chunk"]).encode())
            elif method == "HeapProfiler.reportHeapSnapshotProgress":
                done, total = int(str(params.get("done", 0))), int(str(params.get("total", 0)))
                percent = 100.0 * done / total if total else 0.0
                if params.get("finished") or percent - last_percent >= 1.0:
                    last_percent = percent
                    await self.report(Progress("generating", percent=round(percent, 1)))

        cdp.on_event = on_event
        paused = False
        try:
            if self.node_major >= 22:
                # Node 22+ runs takeHeapSnapshot only on an empty JS stack: pausing first makes
                # it immediate even while JavaScript is busy.
                await cdp.send("Debugger.enable")
                await cdp.send("Debugger.pause")
                paused = True
            pump.started = time.monotonic()
            await cdp.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": True})
        finally:
            cdp.on_event = None
            if paused:
                for method in ("Debugger.resume", "Debugger.disable"):
                    with contextlib.suppress(CdpClosed, CdpCommandError):
                        await cdp.send(method)
        self.on_written()


async def _despite_cancellation(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if cancelled meanwhile, then pass the cancellation on."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def _follow_limit(options: CaptureOptions) -> float:
    """How long the agent may follow a snapshot file: the capture's timeout, else a day
    (the agent must end by itself even if heapsnap vanished)."""
    return options.timeout_seconds or 24 * 3600


def _raise_follow_failure(result: CommandResult, pid: int, path: str) -> NoReturn:
    if result.exit_code == AgentExit.GONE:
        raise TargetExited(f"Process {pid} exited while writing its snapshot; no snapshot was stored.")
    raise CaptureError(
        f"Reading the snapshot of process {pid} from {path} failed: "
        + result.stderr.decode(errors="replace")[-300:]
    )


class TempfileTransfer:
    """V8 writes the snapshot to a file in ``directory`` that the agent unlinks at once and
    streams as it grows. ``on_written`` is called once V8 has written it all, while the
    agent may still be sending."""

    name: Literal["tempfile"] = "tempfile"

    def __init__(self, inspection: Inspection, directory: str, on_written: Callable[[], None]) -> None:
        self.inspection = inspection
        self.directory = directory
        self.on_written = on_written

    async def run(self, pump: BytePump) -> None:
        session, directory = self.inspection.session, self.directory
        pid, agent, info = session.info.pid, session.agent, session.info
        path = posixpath.join(directory, f".heapsnap-{uuid.uuid4().hex}.heapsnapshot")
        timeout = _follow_limit(session.options)
        pump.phase = "generating"
        follower = asyncio.create_task(agent.tail(info, path, timeout, pump.feed))
        writing: asyncio.Future[dict[str, Any]] | None = None
        try:
            await session.report(Progress("generating", message=f"V8 is writing the snapshot in {directory}"))
            pump.started = time.monotonic()
            writing = asyncio.ensure_future(
                self.inspection.cdp.send(
                    "Runtime.evaluate",
                    {
                        "expression": _WRITE_SNAPSHOT.format(path=json.dumps(path)),
                        "includeCommandLineAPI": True,
                    },
                )
            )
            # The agent sees the target die at once; the inspector connection may take longer.
            await asyncio.wait({writing, follower}, return_when=asyncio.FIRST_COMPLETED)
            if follower.done() and not writing.done() and follower.result().exit_code != AgentExit.OK:
                _raise_follow_failure(follower.result(), pid, path)
            reply = await writing
            pump.generated = time.monotonic()
            if "exceptionDetails" in reply:
                details = reply["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text", "")
                raise CaptureError(f"Process {pid} could not write its snapshot to {directory}: {text[:300]}")
            self.on_written()
            pump.phase = "transferring"
            await session.report(Progress("transferring", percent=100.0, bytes_sent=pump.bytes_sent))
            result = await follower
            if result.exit_code != AgentExit.OK:
                _raise_follow_failure(result, pid, path)
        except BaseException:
            if writing is not None:
                writing.cancel()
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
            # The agent unlinks the file once it opened it; this covers a failure before that,
            # even when a second Ctrl-C cancels the clean-up: the file may be hundreds of MiB.
            with contextlib.suppress(HeapsnapError):
                await _despite_cancellation(agent.remove(info, path))
            raise


class SignalTransfer:
    """The snapshot ``signal`` sent by the agent, which follows the file the process writes
    in ``directory`` (unlinked once opened). ``written_seconds``: how long the process took."""

    name: Literal["tempfile"] = "tempfile"

    def __init__(self, session: CaptureSession, signal: str, directory: str) -> None:
        self.session = session
        self.signal = signal
        self.directory = directory
        self.written_seconds: float | None = None

    async def run(self, pump: BytePump) -> None:
        info = self.session.info
        timeout = _follow_limit(self.session.options)
        result = await self.session.agent.signal_follow(info, self.signal, self.directory, timeout, pump.feed)
        stderr = result.stderr.decode(errors="replace").strip()
        if result.exit_code == AgentExit.GONE:
            raise TargetExited(
                f"Process {info.pid} exited while writing its snapshot; no snapshot was stored."
            )
        if result.exit_code == AgentExit.TIMEOUT:
            raise CaptureTimeout(f"Process {info.pid} did not finish its snapshot within {timeout:g} s.")
        if result.exit_code != AgentExit.OK or pump.received == 0:
            raise CaptureError(f"Capturing process {info.pid} by signal failed: {stderr[-300:]}")
        with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
            self.written_seconds = round(float(json.loads(stderr.splitlines()[-1])["written_seconds"]), 3)


async def scratch_dir(inspection: Inspection) -> str | None:
    """A directory of the target's where V8 can write the snapshot, or None to stream it."""
    session = inspection.session
    options, info = session.options, session.info
    if options.transfer == "stream":
        return None
    estimate = inspection.preflight or await _preflight.estimate_live(
        inspection.cdp, info, options.available_bytes
    )
    need = int(estimate.node_count * FILE_BYTES_PER_NODE * 1.5)
    checks = await (session.scratch or session.agent.writable(info, info.scratch_dirs()))
    tried: list[str] = []
    for check in checks:
        if not check.writable:
            tried.append(f"{check.dir} not writable")
        elif check.tmpfs:
            tried.append(f"{check.dir} is tmpfs (memory)")
        elif check.free is not None and check.free < need:
            tried.append(f"{check.dir} has {check.free // MiB:,} MiB free")
        else:
            return check.dir
    if options.transfer == "tempfile":
        raise NoScratchSpace(
            f"Process {info.pid} has no disk-backed directory with ~{need // MiB:,} MiB free for a "
            f"temporary snapshot ({'; '.join(tried)}): use transfer stream, or give it --diagnostic-dir "
            "on a volume with room."
        )
    return None


async def choose_transfer(
    inspection: Inspection, on_written: Callable[[], None]
) -> StreamTransfer | TempfileTransfer:
    """A tempfile where the target has room for it (or was asked to), else the stream."""
    directory = await scratch_dir(inspection)
    if directory is not None:
        return TempfileTransfer(inspection, directory, on_written)
    session = inspection.session
    return StreamTransfer(inspection.cdp, node_major(session.info.version), session.report, on_written)


async def snapshot(inspection: Inspection, sink: Sink, last: bool = True) -> CaptureResult:
    """One snapshot through the session's inspector into ``sink`` (aborted on failure);
    after the ``last`` one the inspector closes while the upload finishes."""
    session = inspection.session
    pid = session.info.pid
    started = time.monotonic()
    pump = BytePump(sink, session.report, session.options)
    release = inspection.release if last else _nothing
    try:
        async with inspector_failures(
            inspection,
            exited=f"Process {pid} exited during the capture; no snapshot was stored.",
            closed=f"The inspector connection of process {pid} closed during the capture",
            refused=f"Process {pid} refused the heap snapshot",
        ):
            transfer = await choose_transfer(inspection, release)
            inspection.target.transfer = transfer.name
            await transfer.run(pump)
        if pump.received == 0:
            raise CaptureError(f"Process {pid} produced an empty heap snapshot.")
        return await pump.commit(inspection.target, inspection.preflight, started)
    except BaseException:
        await sink.abort()
        raise
