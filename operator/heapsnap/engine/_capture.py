"""The capture flow: pick the process, choose a method, snapshot, stream to the sink."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import posixpath
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from heapsnap.engine import _inspector, _preflight, _sampling
from heapsnap.engine._agent import Agent, DirCheck, NodeProcessInfo, node_major, signal_mask
from heapsnap.engine._cdp import CdpChannel, CdpClosed, CdpCommandError, CdpSession
from heapsnap.engine._summary import SummaryWorker
from heapsnap.engine._types import (
    CaptureOptions,
    CaptureResult,
    PreflightEstimate,
    ProcessSelector,
    Progress,
    ProgressCallback,
    TargetInfo,
)
from heapsnap.errors import (
    AmbiguousProcess,
    CaptureError,
    CaptureTimeout,
    DiagnosticDirNotWritable,
    HeapsnapError,
    InspectorDisabled,
    InspectorPortTaken,
    InspectorUnreachable,
    InvalidInput,
    NoScratchSpace,
    NotNodeProcess,
    ProcessNotFound,
    SignalNotHandled,
    TargetExited,
)
from heapsnap.sinks.base import Artifact, Sink
from heapsnap.transports.base import CommandResult, ProcessHost

if TYPE_CHECKING:
    from heapsnap.analysis.stream import SnapshotSummary

T = TypeVar("T")
MiB = 1 << 20
_ANY_PROCESS = ProcessSelector()
_DEFAULTS = CaptureOptions()
_REPORT_EVERY_BYTES = 4 * MiB
_BATCH_BYTES = 1 * MiB


async def _report(on_progress: ProgressCallback | None, progress: Progress) -> None:
    if on_progress is not None:
        await on_progress(progress)


@contextlib.asynccontextmanager
async def _deadline(seconds: float | None) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as error:
        raise CaptureTimeout(
            f"The capture did not finish within {seconds:g} s; raise the timeout (timeoutSeconds) "
            "for a large heap."
        ) from error


async def select_process(host: ProcessHost, selector: ProcessSelector) -> tuple[Agent, NodeProcessInfo]:
    """The target process, and an agent run by the target's own Node.js binary."""
    if selector.pid is not None and selector.pid <= 0:
        raise InvalidInput(f"pid {selector.pid} is not a valid process id: give a positive pid.")
    agent = await Agent.locate(host, selector.pid)
    probe = await agent.probe(selector.pid)
    if selector.pid is not None:
        if not probe.processes:
            raise ProcessNotFound(f"No process with pid {selector.pid} on {host.description}: check the pid.")
        info = probe.processes[0]
        if not info.is_node:
            raise NotNodeProcess(
                f"Process {info.pid} on {host.description} is not Node.js ({info.exe or info.command}): "
                "give the pid of a node process."
            )
    else:
        candidates = probe.processes
        if selector.command_contains:
            candidates = [p for p in candidates if selector.command_contains in p.command]
        elif any(p.pid == 1 for p in candidates):
            candidates = [p for p in candidates if p.pid == 1]
        if not candidates:
            wanted = f" running {selector.command_contains!r}" if selector.command_contains else ""
            raise ProcessNotFound(f"No Node.js process{wanted} found on {host.description}.")
        if len(candidates) > 1:
            listing = "; ".join(f"{p.pid}: {p.command[:80]}" for p in candidates[:10])
            raise AmbiguousProcess(
                f"{len(candidates)} Node.js processes on {host.description} ({listing}): choose one by pid "
                "or by a command-line substring."
            )
        info = candidates[0]
    # The target's own binary by its path: /proc/PID/exe vanishes with the process, and
    # heapsnap still needs node afterwards to clean up and to explain what happened.
    own = info.exe if info.exe and not info.exe.endswith(" (deleted)") else f"/proc/{info.pid}/exe"
    if agent.node == f"/proc/{info.pid}/exe" or probe.agent_exec_path == own:
        agent = Agent(host, own, agent.version)  # the same binary: no need to ask it again
    elif agent.node != own:
        result = await host.run([own, "--version"], timeout=15)
        if result.exit_code == 0:
            agent = Agent(host, own, result.stdout.decode().strip())
    # Otherwise its binary cannot run here (a container's node built for musl, say): the
    # agent is another node, and the target's version is asked through its inspector.
    return agent, dataclasses.replace(info, version=agent.version if agent.node == own else None)


async def _prepare(sink: Sink) -> None:
    """Let a sink check its destination (bucket, credentials) before the target is touched."""
    prepare = getattr(sink, "prepare", None)
    if prepare is not None:
        await prepare()


@contextlib.asynccontextmanager
async def _preparing(sink: Sink) -> AsyncIterator[None]:
    """Prepare ``sink`` while the block runs (the probe, which only reads /proc).

    On exit the sink is ready, or its error is raised: still before the target is touched.
    If the block fails, the preparation is waited for all the same, so that the caller's
    ``abort`` sees (and ends) an upload it started; the block's error is the one raised.
    """
    task = asyncio.ensure_future(_prepare(sink))
    try:
        yield
    except BaseException:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the block's error is what the caller hears of
        raise
    await task


@dataclass
class _Stats:
    bytes_sent: int = 0  # handed to the sink
    received: int = 0
    batch: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    first_chunk: float | None = None
    last_chunk: float | None = None
    # When the target was done: the end of generation when known, else the last chunk.
    generated: float | None = None
    # Bytes can flow while V8 still writes (a followed file): then they are "generating".
    phase: str = "transferring"
    summary: SummaryWorker | None = None
    warnings: list[str] = field(default_factory=list)


async def _deliver(stats: _Stats, sink: Sink, data: bytes, on_progress: ProgressCallback | None) -> None:
    """Take one piece of the snapshot as it arrives; pieces go on in batches of ``_BATCH_BYTES``.

    An exec stream through the API server comes in 32 KiB frames, and each piece costs the
    summary and the sink a fixed overhead: batching cut a pod capture's tail by a third.
    """
    now = time.monotonic()
    if stats.first_chunk is None:
        stats.first_chunk = now
    stats.last_chunk = now
    stats.received += len(data)
    if stats.batch or len(data) < _BATCH_BYTES:
        stats.batch += data
        if len(stats.batch) >= _BATCH_BYTES:
            await _flush(stats, sink, on_progress)
        return
    await _pass_on(stats, sink, data, on_progress)


async def _flush(stats: _Stats, sink: Sink, on_progress: ProgressCallback | None) -> None:
    if stats.batch:
        data, stats.batch = bytes(stats.batch), bytearray()
        await _pass_on(stats, sink, data, on_progress)


async def _pass_on(stats: _Stats, sink: Sink, data: bytes, on_progress: ProgressCallback | None) -> None:
    if stats.summary is not None:
        await stats.summary.feed(data)
    await sink.write(data)
    before = stats.bytes_sent
    stats.bytes_sent += len(data)
    if stats.bytes_sent // _REPORT_EVERY_BYTES != before // _REPORT_EVERY_BYTES:
        if stats.phase == "generating":
            written = f"{stats.bytes_sent // MiB:,} MiB written"
            await _report(on_progress, Progress("generating", bytes_sent=stats.bytes_sent, message=written))
        else:
            await _report(on_progress, Progress("transferring", percent=100.0, bytes_sent=stats.bytes_sent))


async def _finish_summary(stats: _Stats) -> SnapshotSummary | None:
    if stats.summary is None:
        return None
    try:
        return await stats.summary.finish()
    except Exception as error:  # the summary is a bonus: never lose the artifact for it
        stats.warnings.append(f"Summary skipped: {error}")
        return None


async def _take_inspector_snapshot(
    cdp: CdpChannel, sink: Sink, stats: _Stats, node_major: int, on_progress: ProgressCallback | None
) -> None:
    last_percent = -1.0

    async def on_event(method: str, params: dict[str, object]) -> None:
        nonlocal last_percent
        if method == "HeapProfiler.addHeapSnapshotChunk":
            await _deliver(stats, sink, str(params["chunk"]).encode(), on_progress)
        elif method == "HeapProfiler.reportHeapSnapshotProgress":
            done, total = int(str(params.get("done", 0))), int(str(params.get("total", 0)))
            percent = 100.0 * done / total if total else 0.0
            if params.get("finished") or percent - last_percent >= 1.0:
                last_percent = percent
                await _report(on_progress, Progress("generating", percent=round(percent, 1)))

    cdp.on_event = on_event
    paused = False
    try:
        if node_major >= 22:
            # Node 22+ runs takeHeapSnapshot only on an empty JS stack: pausing first makes
            # it immediate even while JavaScript is busy.
            await cdp.send("Debugger.enable")
            await cdp.send("Debugger.pause")
            paused = True
        stats.started = time.monotonic()
        await cdp.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": True})
    finally:
        cdp.on_event = None
        if paused:
            for method in ("Debugger.resume", "Debugger.disable"):
                with contextlib.suppress(CdpClosed, CdpCommandError):
                    await cdp.send(method)


FILE_BYTES_PER_NODE = 120  # snapshot file size per heap node, with margin (70-121 B measured)
_WRITE_SNAPSHOT = (
    "(globalThis.process.getBuiltinModule ? process.getBuiltinModule('v8') : require('v8'))"
    ".writeHeapSnapshot({path})"
)


async def _estimate(cdp: CdpChannel, info: NodeProcessInfo, options: CaptureOptions) -> PreflightEstimate:
    try:
        heap_used: int | None = int(await cdp.evaluate("process.memoryUsage().heapUsed"))
    except (CdpCommandError, TypeError, ValueError):
        heap_used = None  # the estimate falls back on RSS
    return _preflight.estimate(
        info,
        node_major=node_major(info.version),
        heap_used=heap_used,
        available_override=options.available_bytes,
    )


async def _scratch_dir(ctx: _InspectorContext, options: CaptureOptions) -> str | None:
    """A directory of the target's where V8 can write the snapshot, or None to stream it."""
    if options.transfer == "stream":
        return None
    estimate = ctx.preflight or await _estimate(ctx.cdp, ctx.info, options)
    need = int(estimate.node_count * FILE_BYTES_PER_NODE * 1.5)
    checks = await (ctx.scratch or ctx.agent.writable(ctx.info, ctx.info.scratch_dirs()))
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
            f"Process {ctx.info.pid} has no disk-backed directory with ~{need // MiB:,} MiB free for a "
            f"temporary snapshot ({'; '.join(tried)}): use transfer stream, or give it --diagnostic-dir "
            "on a volume with room."
        )
    return None


async def _take_tempfile_snapshot(
    ctx: _InspectorContext,
    directory: str,
    sink: Sink,
    stats: _Stats,
    options: CaptureOptions,
    on_progress: ProgressCallback | None,
    on_written: Callable[[], None],
) -> None:
    """V8 writes the snapshot to a file that the agent unlinks at once and streams as it grows.

    ``on_written`` is called once V8 has written it all, while the agent may still be sending.
    """
    pid = ctx.info.pid
    path = posixpath.join(directory, f".heapsnap-{uuid.uuid4().hex}.heapsnapshot")
    timeout = _follow_limit(options)

    async def deliver(data: bytes) -> None:
        await _deliver(stats, sink, data, on_progress)

    stats.phase = "generating"
    follower = asyncio.create_task(ctx.agent.tail(ctx.info, path, timeout, deliver))
    writing: asyncio.Future[dict[str, Any]] | None = None
    try:
        await _report(
            on_progress, Progress("generating", message=f"V8 is writing the snapshot in {directory}")
        )
        stats.started = time.monotonic()
        writing = asyncio.ensure_future(
            ctx.cdp.send(
                "Runtime.evaluate",
                {"expression": _WRITE_SNAPSHOT.format(path=json.dumps(path)), "includeCommandLineAPI": True},
            )
        )
        # The agent sees the target die at once; the inspector connection may take longer.
        await asyncio.wait({writing, follower}, return_when=asyncio.FIRST_COMPLETED)
        if follower.done() and not writing.done() and follower.result().exit_code != 0:
            _raise_follow_failure(follower.result(), pid, path)
        reply = await writing
        stats.generated = time.monotonic()
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            raise CaptureError(f"Process {pid} could not write its snapshot to {directory}: {text[:300]}")
        on_written()
        stats.phase = "transferring"
        await _report(on_progress, Progress("transferring", percent=100.0, bytes_sent=stats.bytes_sent))
        result = await follower
        if result.exit_code != 0:
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
            await _despite_cancellation(ctx.agent.remove(ctx.info, path))
        raise


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
    if result.exit_code == 3:
        raise TargetExited(f"Process {pid} exited while writing its snapshot; no snapshot was stored.")
    raise CaptureError(
        f"Reading the snapshot of process {pid} from {path} failed: "
        + result.stderr.decode(errors="replace")[-300:]
    )


async def _explain_closed(agent: Agent, pid: int, cdp: CdpChannel, error: CdpClosed) -> HeapsnapError:
    if isinstance(cdp.closed_error, HeapsnapError):
        return cdp.closed_error
    if not (await agent.probe(pid)).processes:
        return TargetExited(f"Process {pid} exited during the capture; no snapshot was stored.")
    return CaptureError(f"The inspector connection of process {pid} closed during the capture: {error}")


@dataclass
class _InspectorContext:
    agent: Agent
    info: NodeProcessInfo
    cdp: CdpChannel  # the main thread's session, or the worker's asked for
    target: TargetInfo
    preflight: PreflightEstimate | None
    warnings: list[str]
    # The scratch directories' check, started early so no round trip waits for it.
    scratch: asyncio.Future[list[DirCheck]] | None = None
    # Called once the inspector is no longer needed, to close it while the bytes still flow.
    release: Callable[[], None] = lambda: None


@contextlib.asynccontextmanager
async def _checking_scratch(
    agent: Agent, info: NodeProcessInfo, options: CaptureOptions
) -> AsyncIterator[asyncio.Future[list[DirCheck]] | None]:
    """Check where a temporary snapshot could go in the background, while the inspector opens."""
    if options.transfer == "stream" or options.method == "signal":
        yield None
        return
    task = asyncio.ensure_future(agent.writable(info, info.scratch_dirs()))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: whoever needed the answer has seen its failure


@contextlib.asynccontextmanager
async def _inspector_target(
    host: ProcessHost,
    agent: Agent,
    info: NodeProcessInfo,
    endpoint: _inspector.InspectorEndpoint,
    options: CaptureOptions,
    on_progress: ProgressCallback | None,
    scratch: asyncio.Future[list[DirCheck]] | None,
) -> AsyncIterator[_InspectorContext]:
    warnings: list[str] = []
    target = TargetInfo(info.pid, info.version or "", info.command, "inspector", endpoint.opened_by_us)
    stack = contextlib.AsyncExitStack()
    cdp: CdpSession | None = None
    closing: asyncio.Future[None] | None = None

    async def close() -> None:
        try:
            if endpoint.opened_by_us and not await _inspector.end(cdp, agent, info.pid, endpoint.port):
                warnings.append(f"The inspector heapsnap opened on port {endpoint.port} is still listening.")
        except HeapsnapError as error:
            # The snapshot may be stored already, or the capture failed for a reason of its
            # own: neither is to be replaced by a failed look at the port.
            warnings.append(
                f"The inspector heapsnap opened on port {endpoint.port} may be still listening: "
                f"checking failed ({error.message})"
            )
        finally:
            await stack.aclose()

    def release() -> None:
        nonlocal closing
        if closing is None:
            closing = asyncio.ensure_future(close())

    try:
        cdp = await stack.enter_async_context(_inspector.session(host, endpoint, node_major(info.version)))
        if info.version is None:  # the agent is not the target's node: ask the target
            try:
                version = str(await cdp.evaluate("process.version"))
            except CdpCommandError as error:
                raise CaptureError(
                    f"Process {info.pid} did not answer through its inspector: {error}"
                ) from error
            info = dataclasses.replace(info, version=version)
            target.node_version = version
        channel: CdpChannel = cdp
        if options.worker is not None:
            channel = await stack.enter_async_context(
                _inspector.worker_session(cdp, options.worker, info.pid)
            )
            target.worker = options.worker
        preflight: PreflightEstimate | None = None
        if options.preflight != "skip":
            await _report(on_progress, Progress("preflight"))
            preflight = await _estimate(channel, info, options)
            _preflight.check(preflight, info.pid, options.preflight, warnings)
        yield _InspectorContext(agent, info, channel, target, preflight, warnings, scratch, release)
    finally:
        release()
        assert closing is not None
        await closing


async def _snapshot_to_sink(
    ctx: _InspectorContext,
    sink: Sink,
    options: CaptureOptions,
    on_progress: ProgressCallback | None,
    last: bool = True,
) -> CaptureResult:
    """One snapshot; after the ``last`` one the inspector closes while the upload finishes."""
    started = time.monotonic()
    stats = _Stats(summary=SummaryWorker(options.summary_top))
    release = ctx.release if last else lambda: None
    try:
        try:
            directory = await _scratch_dir(ctx, options)
            if directory is not None:
                ctx.target.transfer = "tempfile"
                await _take_tempfile_snapshot(ctx, directory, sink, stats, options, on_progress, release)
            else:
                ctx.target.transfer = "stream"
                await _take_inspector_snapshot(
                    ctx.cdp, sink, stats, node_major(ctx.info.version), on_progress
                )
                release()
        except CdpClosed as error:
            raise await _explain_closed(ctx.agent, ctx.info.pid, ctx.cdp, error) from error
        except CdpCommandError as error:
            raise CaptureError(f"Process {ctx.info.pid} refused the heap snapshot: {error}") from error
        if stats.received == 0:
            raise CaptureError(f"Process {ctx.info.pid} produced an empty heap snapshot.")
        return await _commit(sink, stats, ctx.target, ctx.preflight, ctx.warnings, started, on_progress)
    except BaseException:
        await sink.abort()
        raise


async def _commit(
    sink: Sink,
    stats: _Stats,
    target: TargetInfo,
    preflight: PreflightEstimate | None,
    warnings: list[str],
    started: float,
    on_progress: ProgressCallback | None,
) -> CaptureResult:
    await _flush(stats, sink, on_progress)
    await _report(on_progress, Progress("transferring", percent=100.0, bytes_sent=stats.bytes_sent))
    artifact: Artifact = await sink.commit()
    ended = time.monotonic()
    summary = await _finish_summary(stats)
    result = CaptureResult(
        target=target,
        artifact=artifact,
        pause_seconds=round((stats.generated or stats.last_chunk or ended) - stats.started, 3),
        transfer_seconds=round(ended - (stats.first_chunk or ended), 3),
        total_seconds=round(ended - started, 3),
        summary=summary,
        preflight=preflight,
        warnings=[*warnings, *stats.warnings],
    )
    await _report(
        on_progress, Progress("done", percent=100.0, bytes_sent=stats.bytes_sent, message=artifact.uri)
    )
    return result


def _check_worker(options: CaptureOptions) -> None:
    if options.worker is not None and options.worker < 1:
        raise InvalidInput(f"worker {options.worker}: give a worker thread's threadId (1 or more).")
    if options.worker is not None and options.method == "signal":
        raise InvalidInput(
            f"worker {options.worker} with the signal method: the snapshot signal captures the main "
            "thread only; use the inspector method (or auto) for a worker thread."
        )


def _neither_message(info: NodeProcessInfo) -> str:
    return (
        f"Process {info.pid} can be captured neither through its inspector (SIGUSR1 is ignored: "
        "--disable-sigusr1) nor by signal (no --heapsnapshot-signal): restart it without "
        "--disable-sigusr1, or with --heapsnapshot-signal=SIGUSR2."
    )


async def capture(
    host: ProcessHost,
    sink: Sink,
    *,
    selector: ProcessSelector = _ANY_PROCESS,
    options: CaptureOptions = _DEFAULTS,
    on_progress: ProgressCallback | None = None,
) -> CaptureResult:
    """Take one heap snapshot of a Node.js process on ``host`` and store it in ``sink``.

    The sink is committed on success and aborted on any failure.
    """
    started = time.monotonic()
    try:
        _check_worker(options)
        async with _deadline(options.timeout_seconds), contextlib.AsyncExitStack() as stack:
            await _report(on_progress, Progress("probing"))
            # The S3 sink's client and upload (~0.3 s) are made while the agent probes.
            async with _preparing(sink):
                agent, info = await select_process(host, selector)
                scratch = await stack.enter_async_context(_checking_scratch(agent, info, options))
            method = options.method
            # The snapshot signal captures the main thread only.
            signal_ok = _signal_name(info) is not None and info.handles(signal_mask(_signal_name(info) or ""))
            signal_ok = signal_ok and options.worker is None
            if method in ("auto", "inspector") and info.other_network:
                # Its loopback is not ours: a port there may be another process's here.
                if method == "inspector" or not signal_ok:
                    raise InspectorUnreachable(_inspector.unreachable_message(host, info))
                method = "signal"
            endpoint: _inspector.InspectorEndpoint | None = None
            if method in ("auto", "inspector"):
                endpoint = await _inspector.find_open(host, info, options.inspector_port)
            if method == "auto":
                if endpoint is None and not _inspector.can_activate(info):
                    if not signal_ok:
                        raise InspectorDisabled(_neither_message(info))
                    method = "signal"
                else:
                    method = "inspector"
            if method == "signal":
                return await _capture_signal(host, agent, info, sink, options, on_progress, started)
            warnings: list[str] = []
            if endpoint is None:
                try:
                    endpoint = await _inspector.activate(host, agent, info, on_progress)
                except InspectorPortTaken as error:
                    if options.method != "auto" or not signal_ok:
                        raise
                    warnings.append(f"{error} Captured by signal instead.")
                    result = await _capture_signal(host, agent, info, sink, options, on_progress, started)
                    result.warnings[:0] = warnings
                    return result
            async with _inspector_target(host, agent, info, endpoint, options, on_progress, scratch) as ctx:
                result = await _snapshot_to_sink(ctx, sink, options, on_progress)
            result.warnings = [*warnings, *ctx.warnings, *result.warnings]
            result.total_seconds = round(time.monotonic() - started, 3)
            return result
    except BaseException:
        await sink.abort()
        raise


async def capture_series(
    host: ProcessHost,
    sink_factory: Callable[[int], Sink],
    *,
    count: int,
    interval_seconds: float,
    selector: ProcessSelector = _ANY_PROCESS,
    options: CaptureOptions = _DEFAULTS,
    on_progress: ProgressCallback | None = None,
    sample_allocations: int | None = None,
) -> list[CaptureResult]:
    """Take ``count`` snapshots through one inspector session, so node ids stay comparable.

    With ``sample_allocations`` (an interval in bytes), V8's sampling heap profiler runs
    from the first snapshot until just before the last: the last result's
    ``allocations`` names the functions that allocated what is still alive then.
    """
    if count < 1:
        raise InvalidInput(f"count is {count}: a series needs at least one snapshot.")
    _check_worker(options)
    if options.method == "signal":
        raise InvalidInput("A series needs the inspector method (ids reset between signal snapshots).")
    if sample_allocations is not None and count < 2:
        raise InvalidInput("Allocation sampling in a series runs between its snapshots: take 2 or more.")
    results: list[CaptureResult] = []
    allocations: _sampling.AllocationProfile | None = None
    started = 0.0
    async with _deadline(options.timeout_seconds), _session(host, selector, options, on_progress) as ctx:
        for index in range(count):
            if index:
                await asyncio.sleep(interval_seconds)
            if sample_allocations is not None and index == count - 1:
                allocations = await _sampled(ctx, started, sample_allocations, True, on_progress)
            sink = sink_factory(index)
            await _prepare(sink)
            results.append(await _snapshot_to_sink(ctx, sink, options, on_progress, index == count - 1))
            if sample_allocations is not None and index == 0:
                await _sampling_call(ctx, _sampling.start(ctx.cdp, sample_allocations))
                started = time.monotonic()
    for result in results:
        result.warnings[:0] = ctx.warnings
    results[-1].allocations = allocations
    return results


async def sample_allocations(
    host: ProcessHost,
    *,
    seconds: float,
    selector: ProcessSelector = _ANY_PROCESS,
    options: CaptureOptions = _DEFAULTS,
    interval_bytes: int = _sampling.DEFAULT_INTERVAL,
    collect_garbage: bool = True,
    top: int = 25,
    on_progress: ProgressCallback | None = None,
) -> _sampling.AllocationProfile:
    """Sample the allocations of a Node.js process on ``host`` for ``seconds`` (see
    ``_sampling``).

    ``collect_garbage`` runs a full collection before the samples are read, so that
    garbage not yet collected is not reported as alive (it pauses the process as long
    as a major GC does).
    """
    if not 0 < seconds <= 86400:
        raise InvalidInput(f"seconds is {seconds:g}: sample for more than 0 s and at most a day.")
    if not 1 <= interval_bytes <= 1 << 30:
        raise InvalidInput(
            f"interval is {interval_bytes} bytes: give 1 byte to 1 GiB (the default is 524288)."
        )
    _check_worker(options)
    if options.method == "signal":
        raise InvalidInput("Allocation sampling needs the inspector: the signal method only takes snapshots.")
    # Nothing is written next to the target: no scratch directory to look for.
    options = dataclasses.replace(options, method="inspector", transfer="stream", preflight="skip")
    limit = None if options.timeout_seconds is None else options.timeout_seconds + seconds
    async with _deadline(limit), _session(host, selector, options, on_progress) as ctx:
        await _sampling_call(ctx, _sampling.start(ctx.cdp, interval_bytes))
        started = time.monotonic()
        while (left := seconds - (time.monotonic() - started)) > 0:
            if ctx.cdp.closed_error is not None:  # the process went away: say so now
                await _sampling_call(ctx, ctx.cdp.send("HeapProfiler.stopSampling"))  # raises CdpClosed
            done = 100.0 * (seconds - left) / seconds
            await _report(
                on_progress, Progress("sampling", percent=round(done, 1), message=f"{left:.0f} s left")
            )
            await asyncio.sleep(min(1.0, left))
        profile = await _sampled(ctx, started, interval_bytes, collect_garbage, on_progress, top)
    await _report(on_progress, Progress("done", percent=100.0))
    profile.warnings = list(ctx.warnings)
    return profile


async def _sampled(
    ctx: _InspectorContext,
    started: float,
    interval_bytes: int,
    collect_garbage: bool,
    on_progress: ProgressCallback | None,
    top: int = 10,
) -> _sampling.AllocationProfile:
    """Stop the sampling ``started`` then, and rank what it found."""
    if collect_garbage:
        await _report(on_progress, Progress("collecting", message="collecting garbage"))
    profile = await _sampling_call(ctx, _sampling.stop(ctx.cdp, collect_garbage))
    live, sites = _sampling.allocation_sites(profile, top)
    return _sampling.AllocationProfile(
        target=ctx.target,
        seconds=round(time.monotonic() - started, 3),
        interval_bytes=interval_bytes,
        collected_garbage=collect_garbage,
        live_bytes=live,
        sites=sites,
        profile=profile,
    )


async def _sampling_call(ctx: _InspectorContext, call: Awaitable[T]) -> T:
    """A sampling command, its failures said as such."""
    try:
        return await call
    except CdpClosed as error:
        if isinstance(ctx.cdp.closed_error, HeapsnapError):
            raise ctx.cdp.closed_error from error
        if not (await ctx.agent.probe(ctx.info.pid)).processes:
            raise TargetExited(
                f"Process {ctx.info.pid} exited while its allocations were sampled."
            ) from error
        raise CaptureError(f"The inspector connection of process {ctx.info.pid} closed: {error}") from error
    except CdpCommandError as error:
        raise CaptureError(f"Process {ctx.info.pid} refused allocation sampling: {error}") from error


@contextlib.asynccontextmanager
async def _session(
    host: ProcessHost,
    selector: ProcessSelector,
    options: CaptureOptions,
    on_progress: ProgressCallback | None,
) -> AsyncIterator[_InspectorContext]:
    """An inspector session with the process (opening its inspector if need be, and
    closing it afterwards), for work that needs the inspector: a series, sampling."""
    async with contextlib.AsyncExitStack() as stack:
        await _report(on_progress, Progress("probing"))
        agent, info = await select_process(host, selector)
        if info.other_network:
            raise InspectorUnreachable(_inspector.unreachable_message(host, info))
        scratch = await stack.enter_async_context(_checking_scratch(agent, info, options))
        endpoint = await _inspector.find_open(host, info, options.inspector_port)
        if endpoint is None:
            endpoint = await _inspector.activate(host, agent, info, on_progress)
        async with _inspector_target(host, agent, info, endpoint, options, on_progress, scratch) as ctx:
            yield ctx


async def close_inspector(host: ProcessHost, pid: int, port: int) -> bool:
    """Close an inspector heapsnap opened and could not close (the capturer died).

    True when it is closed or the process is gone.
    """
    try:
        agent, info = await select_process(host, ProcessSelector(pid=pid))
    except ProcessNotFound:
        return True
    if info.other_network:  # that port here is not the process's
        raise InspectorUnreachable(_inspector.unreachable_message(host, info))
    return await _inspector.close(host, agent, info.pid, port)


def _signal_name(info: NodeProcessInfo) -> str | None:
    value = info.flag("--heapsnapshot-signal")
    return value or None


async def _capture_signal(
    host: ProcessHost,
    agent: Agent,
    info: NodeProcessInfo,
    sink: Sink,
    options: CaptureOptions,
    on_progress: ProgressCallback | None,
    started: float,
) -> CaptureResult:
    name = _signal_name(info)
    if name is None:
        raise SignalNotHandled(
            f"Process {info.pid} was not started with --heapsnapshot-signal, and any other signal would "
            "kill it: restart it with --heapsnapshot-signal=SIGUSR2 (or use the inspector method)."
        )
    if not info.handles(signal_mask(name)):
        raise SignalNotHandled(
            f"Process {info.pid} has no handler for {name} (per /proc/{info.pid}/status SigCgt) although "
            f"--heapsnapshot-signal={name} is set; sending it would kill the process, so heapsnap did not."
        )
    directory = info.diagnostic_dir()
    if not (await agent.writable(info, [directory]))[0].writable:
        raise DiagnosticDirNotWritable(
            f"Process {info.pid} cannot write its snapshot to {directory} (its diagnostic directory), and "
            "a signal would crash it: start it with --diagnostic-dir=<a writable directory>."
        )
    warnings: list[str] = []
    preflight: PreflightEstimate | None = None
    if options.preflight != "skip":
        await _report(on_progress, Progress("preflight"))
        preflight = _preflight.estimate(
            info,
            node_major=node_major(info.version),
            heap_used=None,
            available_override=options.available_bytes,
        )
        _preflight.check(preflight, info.pid, options.preflight, warnings)
    target = TargetInfo(info.pid, info.version or "unknown", info.command, "signal", False, "tempfile")
    await _report(on_progress, Progress("signalling", message=f"sending {name} to pid {info.pid}"))
    stats = _Stats(summary=SummaryWorker(options.summary_top), started=time.monotonic(), phase="generating")

    async def deliver(data: bytes) -> None:
        await _deliver(stats, sink, data, on_progress)

    timeout = _follow_limit(options)
    # The agent signals, then follows the file the process writes (unlinked once opened).
    result = await agent.signal_follow(info, name, directory, timeout, deliver)
    stderr = result.stderr.decode(errors="replace").strip()
    if result.exit_code == 3:
        raise TargetExited(f"Process {info.pid} exited while writing its snapshot; no snapshot was stored.")
    if result.exit_code == 4:
        raise CaptureTimeout(f"Process {info.pid} did not finish its snapshot within {timeout:g} s.")
    if result.exit_code != 0 or stats.received == 0:
        raise CaptureError(f"Capturing process {info.pid} by signal failed: {stderr[-300:]}")
    captured = await _commit(sink, stats, target, preflight, warnings, started, on_progress)
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        captured.pause_seconds = round(float(json.loads(stderr.splitlines()[-1])["written_seconds"]), 3)
    return captured


class _DirectHost:
    """An inspector reachable from here at ``ip:port``; nothing runs next to the target."""

    def __init__(self, ip: str) -> None:
        self.ip = ip

    @contextlib.asynccontextmanager
    async def connect_port(self, port: int) -> AsyncIterator[tuple[str, int]]:
        yield (self.ip, port)


async def _resolve_ip(host: str) -> str:
    # Node's inspector refuses a Host header that is not an IP or localhost.
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as error:
        raise InvalidInput(f"Cannot resolve the inspector host {host!r}: {error}") from error
    return str(infos[0][4][0])


async def capture_inspector(
    address: str,
    sink: Sink,
    *,
    options: CaptureOptions = _DEFAULTS,
    on_progress: ProgressCallback | None = None,
) -> CaptureResult:
    """Capture through an inspector reachable from here: ``ws://host:port/id`` or ``host:port``.

    heapsnap did not open this inspector, so it leaves it open; memory headroom is not
    visible from here, so the preflight only estimates and reports.
    """
    _check_worker(options)
    match = re.fullmatch(r"(?:wss?://)?\[?([^\]/]+?)\]?:(\d+)(/.*)?", address.strip())
    if not match:
        raise InvalidInput(f"--inspect {address!r}: give ws://HOST:PORT/ID or HOST:PORT.")
    ip, port, path = await _resolve_ip(match.group(1)), int(match.group(2)), match.group(3)
    direct = _DirectHost(ip)
    started = time.monotonic()
    try:
        async with _deadline(options.timeout_seconds):
            await _report(on_progress, Progress("probing"))
            await _prepare(sink)
            if path is None:
                targets = await _inspector.json_list(direct, port)  # type: ignore[arg-type]
                if not targets:
                    raise InspectorUnreachable(
                        f"No Node.js inspector answers on {ip}:{port}: check the address, or open the "
                        "inspector with --inspect or SIGUSR1."
                    )
                path = _inspector.ws_path(next(t["webSocketDebuggerUrl"] for t in targets))
            endpoint = _inspector.InspectorEndpoint(port, path, opened_by_us=False)
            async with (
                _inspector.session(direct, endpoint) as cdp,  # type: ignore[arg-type]
                contextlib.AsyncExitStack() as stack,
            ):
                facts = await cdp.evaluate(
                    "JSON.stringify({pid: process.pid, version: process.version, argv: process.argv,"
                    " heap: process.memoryUsage().heapUsed})"
                )
                about = json.loads(facts)
                major = int(re.match(r"v(\d+)", about["version"]).group(1))  # type: ignore[union-attr]
                target = TargetInfo(
                    about["pid"], about["version"], " ".join(about["argv"]), "inspector", False
                )
                channel: CdpChannel = cdp
                if options.worker is not None:
                    session = _inspector.worker_session(cdp, options.worker, about["pid"])
                    channel = await stack.enter_async_context(session)
                    about["heap"] = await channel.evaluate("process.memoryUsage().heapUsed")
                    target.worker = options.worker
                preflight = None
                if options.preflight != "skip":
                    await _report(on_progress, Progress("preflight"))
                    heap = int(about["heap"])
                    nodes = heap // _preflight.HEAP_BYTES_PER_NODE
                    preflight = PreflightEstimate(
                        node_count=nodes,
                        estimated_bytes=nodes * _preflight.BYTES_PER_NODE,
                        available_bytes=options.available_bytes,
                        estimated_pause_seconds=round(nodes * _preflight.seconds_per_node(major), 2),
                        source={
                            "node_count": f"used heap {heap // MiB} MiB",
                            "available_bytes": "not visible",
                        },
                    )
                    warnings: list[str] = []
                    _preflight.check(preflight, target.pid, options.preflight, warnings)
                stats = _Stats(summary=SummaryWorker(options.summary_top))
                try:
                    await _take_inspector_snapshot(channel, sink, stats, major, on_progress)
                except CdpClosed as error:
                    raise CaptureError(
                        f"The inspector at {address} closed during the capture: {error}"
                    ) from error
                return await _commit(sink, stats, target, preflight, [], started, on_progress)
    except BaseException:
        await sink.abort()
        raise
