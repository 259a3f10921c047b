"""Reaching a Node.js process's inspector: find an open one, or open it and close it after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from heapsnap.engine._agent import SIGUSR1_MASK, Agent, NodeProcessInfo
from heapsnap.engine._cdp import CdpClosed, CdpCommandError, CdpSession, WorkerSession
from heapsnap.engine._types import Progress, ProgressCallback
from heapsnap.errors import InspectorDisabled, InspectorPortTaken, InspectorUnreachable, WorkerNotFound
from heapsnap.transports.base import ProcessHost

DEFAULT_PORT = 9229
_ACTIVATION_WAIT = 10.0
CLOSE_WAIT = 15.0  # for the target to stop listening once its inspector was told to close
# After a crash the target may still be writing the snapshot the dead capturer asked for:
# it closes its inspector only after that. Below the operator's 120 s budget for it.
RECOVERY_WAIT = 110.0


async def json_list(host: ProcessHost, port: int, wait: float = 2.0) -> list[dict[str, Any]] | None:
    """GET /json/list on the target's ``port``; None when it is not an inspector."""
    try:
        async with host.connect_port(port) as (ip, local_port), asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(ip, local_port)
            try:
                request = f"GET /json/list HTTP/1.1\r\nHost: {ip}:{local_port}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                # Node's inspector keeps the connection open: read exactly Content-Length.
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    if not re.match(rb"HTTP/1\.[01] 200 ", head):
        return None
    try:
        targets = json.loads(body)
    except ValueError:
        return None
    if not isinstance(targets, list) or not any("webSocketDebuggerUrl" in t for t in targets):
        return None
    return targets


def expected_port(info: NodeProcessInfo) -> int:
    """The port SIGUSR1 opens: ``--inspect-port``/``--debug-port`` ([host:]port), else 9229."""
    for name in ("--inspect-port", "--debug-port"):
        value = info.flag(name)
        if value:
            match = re.search(r"(\d+)$", value)
            if match:
                return int(match.group(1))
    return DEFAULT_PORT


# Node tears its inspector down in well under this (0.1 s measured, 1 M objects).
_TEARDOWN_SECONDS = 1.0
# Locally the session ends with the port; a port-forward's never does.
_PEER_GRACE_SECONDS = 0.1


@dataclass
class InspectorEndpoint:
    port: int
    path: str
    opened_by_us: bool


async def find_open(host: ProcessHost, info: NodeProcessInfo, preferred: int) -> InspectorEndpoint | None:
    ports = sorted(info.listening, key=lambda p: (p != preferred, p != expected_port(info), p))
    for port in ports:
        targets = await json_list(host, port)
        if targets:
            url = next(t["webSocketDebuggerUrl"] for t in targets if "webSocketDebuggerUrl" in t)
            return InspectorEndpoint(port, ws_path(url), opened_by_us=False)
    return None


def ws_path(url: str) -> str:
    match = re.match(r"wss?://[^/]+(/.*)$", url)
    return match.group(1) if match else "/"


def unreachable_message(host: ProcessHost, info: NodeProcessInfo) -> str:
    """Why an inspector of ``info`` cannot be used from ``host``: another network namespace."""
    return (
        f"Process {info.pid} on {host.description} runs in a network namespace of its own (a "
        "container's, say): its inspector would listen on that namespace's loopback, out of reach "
        f"from here, so heapsnap did not open it. Run heapsnap in that namespace (nsenter --target "
        f"{info.pid} --net heapsnap capture --pid {info.pid} ...; for a pod, a HeapSnapshot), or start "
        "the process with --heapsnapshot-signal=SIGUSR2 and use --method signal."
    )


def can_activate(info: NodeProcessInfo) -> bool:
    return info.handles(SIGUSR1_MASK)


def port_taken_message(port: int, host: ProcessHost) -> str:
    return (
        f"Port {port} on {host.description} is already in use by another process, so the target's "
        "inspector could not start there (Node keeps running without one). Free the port, start the "
        "target with --inspect-port=0 (or another free port), or use --method signal with "
        "--heapsnapshot-signal=SIGUSR2."
    )


async def activate(
    host: ProcessHost, agent: Agent, info: NodeProcessInfo, on_progress: ProgressCallback | None
) -> InspectorEndpoint:
    """Open the inspector with ``process._debugProcess(pid)`` and find its port."""
    if not can_activate(info):
        raise InspectorDisabled(
            f"Process {info.pid} on {host.description} ignores SIGUSR1 (started with --disable-sigusr1 or "
            "a SIGUSR1 handler of its own), so its inspector cannot be opened: restart it without "
            "--disable-sigusr1, or with --heapsnapshot-signal=SIGUSR2 and use --method signal."
        )
    port = expected_port(info)
    if on_progress is not None:
        await on_progress(Progress("activating", message=f"opening the inspector of pid {info.pid}"))
    # The agent opens the inspector and waits next to the target for its port.
    new_ports, taken = await agent.activate(info.pid, port, _ACTIVATION_WAIT)
    if taken:
        raise InspectorPortTaken(port_taken_message(port, host))
    deadline = time.monotonic() + _ACTIVATION_WAIT
    while new_ports and time.monotonic() < deadline:
        for new_port in sorted(new_ports, key=lambda p: p != port):
            targets = await json_list(host, new_port)
            if targets:
                url = next(t["webSocketDebuggerUrl"] for t in targets if "webSocketDebuggerUrl" in t)
                if on_progress is not None:
                    await on_progress(
                        Progress(
                            "activating",
                            message=f"inspector of pid {info.pid} open on port {new_port}",
                            inspector_port=new_port,
                            pid=info.pid,
                        )
                    )
                return InspectorEndpoint(new_port, ws_path(url), opened_by_us=True)
        await asyncio.sleep(0.05)
    raise InspectorUnreachable(
        f"Process {info.pid} on {host.description} did not open its inspector "
        f"within {_ACTIVATION_WAIT:.0f} s of the activation signal; "
        "check its stderr for 'Starting inspector ... failed'."
    )


@contextlib.asynccontextmanager
async def session(
    host: ProcessHost, endpoint: InspectorEndpoint, node_major: int = 0
) -> AsyncIterator[CdpSession]:
    """One CDP session, closed on exit (``end`` closes an inspector heapsnap opened)."""
    # Snapshot chunks are 100 KiB up to Node 22 and 1 MiB from Node 24.
    queue = 64 if 0 < node_major < 24 else 8
    async with host.connect_port(endpoint.port) as (ip, port):
        cdp = await CdpSession.connect(f"ws://{ip}:{port}{endpoint.path}", queue=queue)
        try:
            yield cdp
        finally:
            await cdp.close()


@contextlib.asynccontextmanager
async def worker_session(cdp: CdpSession, thread_id: int, pid: int) -> AsyncIterator[WorkerSession]:
    """The session of the worker thread whose ``threadId`` is ``thread_id``, inside ``cdp``;
    detached on exit."""
    attached: list[dict[str, Any]] = []

    async def collect(method: str, params: dict[str, Any]) -> None:
        if method == "NodeWorker.attachedToWorker":
            attached.append(params)

    cdp.on_event = collect
    worker: WorkerSession | None = None
    try:
        # Node attaches to every running worker as the domain is enabled, before it replies.
        await cdp.send("NodeWorker.enable", {"waitForDebuggerOnStart": False})
        infos = [(a["sessionId"], a.get("workerInfo") or {}) for a in attached]
        chosen = next(((s, i) for s, i in infos if str(i.get("workerId")) == str(thread_id)), None)
        if chosen is None:
            listing = ", ".join(
                f"{i.get('workerId')} ({i.get('title') or i.get('url') or 'untitled'})" for _, i in infos
            )
            has = f"its worker threads are {listing}" if infos else "it runs no worker threads"
            raise WorkerNotFound(
                f"Process {pid} has no worker thread with threadId {thread_id} ({has}): give one of "
                "its threadIds, or none to capture the main thread."
            )
        worker = WorkerSession(cdp, chosen[0], str(chosen[1].get("title") or f"worker {thread_id}"))
        cdp.on_event = worker.route
        yield worker
    finally:
        cdp.on_event = None
        with contextlib.suppress(CdpClosed, CdpCommandError):
            if worker is not None:
                await cdp.send("NodeWorker.detach", {"sessionId": worker.session_id})
            await cdp.send("NodeWorker.disable")


async def end(cdp: CdpSession | None, agent: Agent, pid: int, port: int, wait: float = CLOSE_WAIT) -> bool:
    """Close the inspector heapsnap opened, from inside its ``session`` (None: none could open).

    True once ``pid`` no longer listens on ``port`` (or is gone).
    """
    # The agent watches the port from the start, so its answer is ready as soon as it closes.
    closed = asyncio.ensure_future(agent.closed(pid, port, wait))
    try:
        if cdp is not None:
            # Deferred: inspector teardown must not run inside this session's own dispatch.
            # Then the target ends this session itself: closing it from here while the
            # inspector shuts down crashes Node 24 (SIGSEGV, about one run in five). A
            # port-forward does not pass that close on: there, the port closing tells.
            # And deferred past one poll of the event loop: activated while JavaScript was
            # busy, Node started the inspector from an interrupt and also queued a start
            # for its event loop, which reopened an inspector closed before it (in the
            # next iteration's check phase, after its poll phase, it finds it open).
            with contextlib.suppress(CdpClosed, CdpCommandError, TimeoutError):
                async with asyncio.timeout(5):
                    await cdp.evaluate("setImmediate(() => setImmediate(() => process._debugEnd())), true")
                    peer = asyncio.ensure_future(cdp.closed_by_peer(_TEARDOWN_SECONDS))
                    await asyncio.wait({peer, closed}, return_when=asyncio.FIRST_COMPLETED)
                    if not peer.done():
                        await asyncio.wait({peer}, timeout=_PEER_GRACE_SECONDS)
                    if not peer.done() and await closed:
                        cdp.abandon()  # the inspector is gone: its handshake would never come
                    peer.cancel()
        return await closed
    finally:
        closed.cancel()


async def close(host: ProcessHost, agent: Agent, pid: int, port: int) -> bool:
    """Close the inspector heapsnap opened on ``port`` of ``pid`` (after a crash, say).

    True once it no longer listens or the process is gone; a port that is no longer an
    inspector is left alone.
    """
    if not (await agent.probe(pid)).processes:
        return True
    # Unhurried: a port-forward through a busy API server can take seconds to answer.
    targets = await json_list(host, port, wait=10.0)
    if not targets:
        return await agent.closed(pid, port, wait=0.5)
    url = next(t["webSocketDebuggerUrl"] for t in targets if "webSocketDebuggerUrl" in t)
    async with session(host, InspectorEndpoint(port, ws_path(url), opened_by_us=True)) as cdp:
        return await end(cdp, agent, pid, port, wait=RECOVERY_WAIT)
