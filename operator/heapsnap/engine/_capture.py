"""One snapshot of a process: choose the method, then capture by inspector or by signal;
or through an inspector reachable from here (``capture_inspector``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator

from heapsnap.engine import _inspector, _preflight
from heapsnap.engine._agent import NodeProcessInfo, node_major, signal_mask
from heapsnap.engine._cdp import CdpClosed
from heapsnap.engine._pump import BytePump
from heapsnap.engine._session import (
    CaptureSession,
    Reporter,
    checking_scratch,
    deadline,
    inspecting,
    prepare,
    preparing,
    select_process,
)
from heapsnap.engine._targets import target_kind
from heapsnap.engine._transfers import SignalTransfer, StreamTransfer, snapshot
from heapsnap.engine._types import (
    CaptureOptions,
    CaptureResult,
    Method,
    PreflightEstimate,
    ProcessSelector,
    Progress,
    ProgressCallback,
    TargetInfo,
)
from heapsnap.errors import (
    CaptureError,
    DiagnosticDirNotWritable,
    InspectorDisabled,
    InspectorPortTaken,
    InspectorUnreachable,
    InvalidInput,
    ProcessNotFound,
    SignalNotHandled,
)
from heapsnap.sinks.base import Sink
from heapsnap.transports.base import ProcessHost

__all__ = ["capture", "capture_inspector", "close_inspector", "select_process"]

_ANY_PROCESS = ProcessSelector()
_DEFAULTS = CaptureOptions()


def _signal_name(info: NodeProcessInfo) -> str | None:
    value = info.flag("--heapsnapshot-signal")
    return value or None


def _signal_ok(session: CaptureSession) -> bool:
    """Whether the snapshot signal can capture the thread asked for without killing the process."""
    name = _signal_name(session.info)
    return name is not None and session.info.handles(signal_mask(name)) and session.kind.signal_ok


def _neither_message(info: NodeProcessInfo) -> str:
    return (
        f"Process {info.pid} can be captured neither through its inspector (SIGUSR1 is ignored: "
        "--disable-sigusr1) nor by signal (no --heapsnapshot-signal): restart it without "
        "--disable-sigusr1, or with --heapsnapshot-signal=SIGUSR2."
    )


async def _choose_method(session: CaptureSession) -> tuple[Method, _inspector.InspectorEndpoint | None]:
    """``inspector`` (with its endpoint when it is open already) or ``signal``."""
    host, info = session.host, session.info
    method = session.options.method
    signal_ok = _signal_ok(session)
    if method in ("auto", "inspector") and info.other_network:
        # Its loopback is not ours: a port there may be another process's here.
        if method == "inspector" or not signal_ok:
            raise InspectorUnreachable(_inspector.unreachable_message(host, info))
        method = "signal"
    endpoint: _inspector.InspectorEndpoint | None = None
    if method in ("auto", "inspector"):
        endpoint = await _inspector.find_open(host, info, session.options.inspector_port)
    if method == "auto":
        if endpoint is None and not _inspector.can_activate(info):
            if not signal_ok:
                raise InspectorDisabled(_neither_message(info))
            method = "signal"
        else:
            method = "inspector"
    return method, endpoint


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
    report = Reporter(on_progress)
    try:
        target_kind(options)
        async with deadline(options.timeout_seconds), contextlib.AsyncExitStack() as stack:
            await report(Progress("probing"))
            # The S3 sink's client and upload (~0.3 s) are made while the agent probes.
            async with preparing(sink):
                session = await CaptureSession.open(host, selector, options, report)
                await stack.enter_async_context(checking_scratch(session))
            method, endpoint = await _choose_method(session)
            if method == "signal":
                result = await _capture_signal(session, sink, started)
            else:
                if endpoint is None:
                    try:
                        endpoint = await _inspector.activate(host, session.agent, session.info, report)
                    except InspectorPortTaken as error:
                        if options.method != "auto" or not _signal_ok(session):
                            raise
                        session.warnings.append(f"{error} Captured by signal instead.")
                if endpoint is None:
                    result = await _capture_signal(session, sink, started)
                else:
                    async with inspecting(session, endpoint) as inspection:
                        result = await snapshot(inspection, sink)
                    result.total_seconds = round(time.monotonic() - started, 3)
            result.warnings[:0] = session.warnings
            return result
    except BaseException:
        await sink.abort()
        raise


async def _capture_signal(session: CaptureSession, sink: Sink, started: float) -> CaptureResult:
    info, agent, options = session.info, session.agent, session.options
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
    preflight: PreflightEstimate | None = None
    if options.preflight != "skip":
        await session.report(Progress("preflight"))
        preflight = _preflight.estimate(
            info,
            node_major=node_major(info.version),
            heap_used=None,
            available_override=options.available_bytes,
        )
        _preflight.check(preflight, info.pid, options.preflight, session.warnings)
    transfer = SignalTransfer(session, name, directory)
    target = TargetInfo(info.pid, info.version or "unknown", info.command, "signal", False, transfer.name)
    await session.report(Progress("signalling", message=f"sending {name} to pid {info.pid}"))
    pump = BytePump(sink, session.report, options, phase="generating", started=time.monotonic())
    await transfer.run(pump)
    captured = await pump.commit(target, preflight, started)
    if transfer.written_seconds is not None:
        captured.pause_seconds = transfer.written_seconds
    return captured


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
    kind = target_kind(options)
    report = Reporter(on_progress)
    match = re.fullmatch(r"(?:wss?://)?\[?([^\]/]+?)\]?:(\d+)(/.*)?", address.strip())
    if not match:
        raise InvalidInput(f"--inspect {address!r}: give ws://HOST:PORT/ID or HOST:PORT.")
    ip, port, path = await _resolve_ip(match.group(1)), int(match.group(2)), match.group(3)
    direct = _DirectHost(ip)
    started = time.monotonic()
    try:
        async with deadline(options.timeout_seconds):
            await report(Progress("probing"))
            await prepare(sink)
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
                major = node_major(about["version"])
                target = TargetInfo(
                    about["pid"], about["version"], " ".join(about["argv"]), "inspector", False
                )
                channel = await stack.enter_async_context(kind.channel(cdp, about["pid"]))
                if kind.thread_id is not None:
                    about["heap"] = await channel.evaluate("process.memoryUsage().heapUsed")
                    target.worker = kind.thread_id
                preflight = None
                warnings: list[str] = []
                if options.preflight != "skip":
                    await report(Progress("preflight"))
                    preflight = _preflight.estimate(
                        None,
                        node_major=major,
                        heap_used=int(about["heap"]),
                        available_override=options.available_bytes,
                    )
                    _preflight.check(preflight, target.pid, options.preflight, warnings)
                pump = BytePump(sink, report, options)
                try:
                    await StreamTransfer(channel, major, report).run(pump)
                except CdpClosed as error:
                    raise CaptureError(
                        f"The inspector at {address} closed during the capture: {error}"
                    ) from error
                result = await pump.commit(target, preflight, started)
                result.warnings[:0] = warnings
                return result
    except BaseException:
        await sink.abort()
        raise
