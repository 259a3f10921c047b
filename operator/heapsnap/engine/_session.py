"""A capture session: the process chosen, its agent, the options and the progress reporter,
passed whole to each step instead of one by one; and the session's open inspector."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from heapsnap.engine import _inspector, _preflight
from heapsnap.engine._agent import Agent, DirCheck, NodeProcessInfo, node_major
from heapsnap.engine._cdp import CdpChannel, CdpClosed, CdpCommandError, CdpSession
from heapsnap.engine._targets import TargetKind, target_kind
from heapsnap.engine._types import (
    CaptureOptions,
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
    HeapsnapError,
    InspectorUnreachable,
    InvalidInput,
    NotNodeProcess,
    ProcessNotFound,
    TargetExited,
)
from heapsnap.sinks.base import Sink
from heapsnap.transports.base import ProcessHost


class Reporter:
    """Where a capture's progress goes: the caller's callback, or nowhere."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self._on_progress = on_progress

    async def __call__(self, progress: Progress) -> None:
        if self._on_progress is not None:
            await self._on_progress(progress)


@contextlib.asynccontextmanager
async def deadline(seconds: float | None) -> AsyncIterator[None]:
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


async def prepare(sink: Sink) -> None:
    """Let a sink check its destination (bucket, credentials) before the target is touched."""
    prepare = getattr(sink, "prepare", None)
    if prepare is not None:
        await prepare()


@contextlib.asynccontextmanager
async def preparing(sink: Sink) -> AsyncIterator[None]:
    """Prepare ``sink`` while the block runs (the probe, which only reads /proc).

    On exit the sink is ready, or its error is raised: still before the target is touched.
    If the block fails, the preparation is waited for all the same, so that the caller's
    ``abort`` sees (and ends) an upload it started; the block's error is the one raised.
    """
    task = asyncio.ensure_future(prepare(sink))
    try:
        yield
    except BaseException:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the block's error is what the caller hears of
        raise
    await task


@dataclass
class CaptureSession:
    """One capture (or series, or sampling) of one process, from its choice to the result."""

    host: ProcessHost
    agent: Agent
    info: NodeProcessInfo
    options: CaptureOptions
    report: Reporter
    # Said once, in the result: preflight warnings, an inspector left open, a fallback taken.
    warnings: list[str] = field(default_factory=list)
    # The scratch directories' check, started early so no round trip waits for it.
    scratch: asyncio.Future[list[DirCheck]] | None = None
    kind: TargetKind = field(init=False)

    def __post_init__(self) -> None:
        self.kind = target_kind(self.options)

    @classmethod
    async def open(
        cls, host: ProcessHost, selector: ProcessSelector, options: CaptureOptions, report: Reporter
    ) -> CaptureSession:
        agent, info = await select_process(host, selector)
        return cls(host, agent, info, options, report)


@dataclass
class Inspection:
    """A session's open inspector: the channel to the thread captured (the main thread's
    session, or the worker's asked for)."""

    session: CaptureSession
    cdp: CdpChannel
    target: TargetInfo
    preflight: PreflightEstimate | None
    # Called once the inspector is no longer needed, to close it while the bytes still flow.
    release: Callable[[], None] = lambda: None


@contextlib.asynccontextmanager
async def checking_scratch(session: CaptureSession) -> AsyncIterator[None]:
    """Check where a temporary snapshot could go in the background, while the inspector opens."""
    options, info = session.options, session.info
    if options.transfer == "stream" or options.method == "signal":
        yield
        return
    task = asyncio.ensure_future(session.agent.writable(info, info.scratch_dirs()))
    session.scratch = task
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: whoever needed the answer has seen its failure


@contextlib.asynccontextmanager
async def inspecting(
    session: CaptureSession, endpoint: _inspector.InspectorEndpoint
) -> AsyncIterator[Inspection]:
    """The inspector at ``endpoint`` connected, its thread chosen and the preflight run;
    an inspector heapsnap opened is closed on exit (or on ``release``, sooner)."""
    info, agent, options = session.info, session.agent, session.options
    target = TargetInfo(info.pid, info.version or "", info.command, "inspector", endpoint.opened_by_us)
    stack = contextlib.AsyncExitStack()
    cdp: CdpSession | None = None
    closing: asyncio.Future[None] | None = None

    async def close() -> None:
        try:
            if endpoint.opened_by_us and not await _inspector.end(cdp, agent, info.pid, endpoint.port):
                session.warnings.append(
                    f"The inspector heapsnap opened on port {endpoint.port} is still listening."
                )
        except HeapsnapError as error:
            # The snapshot may be stored already, or the capture failed for a reason of its
            # own: neither is to be replaced by a failed look at the port.
            session.warnings.append(
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
        cdp = await stack.enter_async_context(
            _inspector.session(session.host, endpoint, node_major(info.version))
        )
        if info.version is None:  # the agent is not the target's node: ask the target
            try:
                version = str(await cdp.evaluate("process.version"))
            except CdpCommandError as error:
                raise CaptureError(
                    f"Process {info.pid} did not answer through its inspector: {error}"
                ) from error
            info = session.info = dataclasses.replace(info, version=version)
            target.node_version = version
        channel = await stack.enter_async_context(session.kind.channel(cdp, info.pid))
        target.worker = session.kind.thread_id
        preflight: PreflightEstimate | None = None
        if options.preflight != "skip":
            await session.report(Progress("preflight"))
            preflight = await _preflight.estimate_live(channel, info, options.available_bytes)
            _preflight.check(preflight, info.pid, options.preflight, session.warnings)
        yield Inspection(session, channel, target, preflight, release)
    finally:
        release()
        assert closing is not None
        await closing


@contextlib.asynccontextmanager
async def inspector_session(
    host: ProcessHost, selector: ProcessSelector, options: CaptureOptions, report: Reporter
) -> AsyncIterator[Inspection]:
    """An inspector session with the process (opening its inspector if need be, and
    closing it afterwards), for work that needs the inspector: a series, sampling."""
    async with contextlib.AsyncExitStack() as stack:
        await report(Progress("probing"))
        session = await CaptureSession.open(host, selector, options, report)
        if session.info.other_network:
            raise InspectorUnreachable(_inspector.unreachable_message(host, session.info))
        await stack.enter_async_context(checking_scratch(session))
        endpoint = await _inspector.find_open(host, session.info, options.inspector_port)
        if endpoint is None:
            endpoint = await _inspector.activate(host, session.agent, session.info, report)
        async with inspecting(session, endpoint) as inspection:
            yield inspection


@contextlib.asynccontextmanager
async def inspector_failures(
    inspection: Inspection, *, exited: str, closed: str, refused: str
) -> AsyncIterator[None]:
    """Inspector failures in the block said as what they mean: the process exited
    (``exited``), the connection broke (``closed``, then why), or the process refused a
    command (``refused``, then its answer)."""
    try:
        yield
    except CdpClosed as error:
        cdp = inspection.cdp
        if isinstance(cdp.closed_error, HeapsnapError):
            raise cdp.closed_error from error
        if not (await inspection.session.agent.probe(inspection.session.info.pid)).processes:
            raise TargetExited(exited) from error
        raise CaptureError(f"{closed}: {error}") from error
    except CdpCommandError as error:
        raise CaptureError(f"{refused}: {error}") from error
