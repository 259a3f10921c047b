"""``ProcessHost`` for a container in a pod, over the API server's exec and port-forward.

Exec speaks the websocket channel protocol (``v5.channel.k8s.io``, else
``v4.channel.k8s.io``): each binary frame starts with its channel (1 stdout, 2 stderr,
3 error/status). The exit code comes from the Status JSON on channel 3.

Port-forward speaks the websocket port-forward protocol: per forwarded port, channel 0
carries data and channel 1 errors, and each channel's first frame is the port number
(two bytes, little endian). One websocket carries one TCP connection, so every local
connection gets its own websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from heapsnap.errors import PodError, TransportError
from heapsnap.k8s.api import ApiConnection
from heapsnap.transports.base import CommandResult, StdoutCallback

logger = logging.getLogger(__name__)

EXEC_PROTOCOLS = (Subprotocol("v5.channel.k8s.io"), Subprotocol("v4.channel.k8s.io"))
PORTFORWARD_PROTOCOLS = (Subprotocol("v4.channel.k8s.io"),)

STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
_STDERR_LIMIT = 1 << 20
_EXIT_STATUS = re.compile(r"exit status (\d+)\s*$")


def exit_code_from_status(raw: bytes) -> tuple[int, str]:
    """Exit code and failure message from the exec error channel's ``metav1.Status``.

    A command that could not start at all (no such executable) has no exit code; it is
    reported as 127, like a shell does, so callers can try another binary.
    """
    text = raw.decode("utf-8", "replace")
    try:
        status = json.loads(text)
    except json.JSONDecodeError:
        raise TransportError(f"The API server's exec stream reported: {text}") from None
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message", ""))
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return int(cause.get("message", "1")), message
        return 1, message
    # Some kubelets (kwok among them) report a plain failure whose message ends with
    # Go's exec error: "...: exit status 3".
    match = _EXIT_STATUS.search(message)
    if match:
        return int(match.group(1)), message
    return 127, message


def _handshake_error(error: Exception, what: str) -> Exception:
    """Turn a refused websocket upgrade into a message that says what to check."""
    if isinstance(error, websockets.InvalidStatus):
        code = error.response.status_code
        body = error.response.body.decode("utf-8", "replace") if error.response.body else ""
        message = body
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", body)
        if code == 404:
            return PodError(f"{what}: not found ({message}).", reason="PodNotFound")
        if code == 403:
            return TransportError(
                f"{what}: forbidden ({message}); grant get and create on pods/exec and pods/portforward "
                "to the operator's identity (API servers from 1.35 check both verbs).",
                retryable=False,
            )
        if code == 400 and "container" in message:
            return PodError(f"{what}: {message}", reason="ContainerNotFound")
        return TransportError(f"{what}: the API server answered {code}: {message}")
    return TransportError(f"{what}: {error}")


@dataclass
class PodHost:
    """The container ``container`` of pod ``namespace/pod``, reached through the API server."""

    api: ApiConnection
    namespace: str
    pod: str
    container: str

    @property
    def description(self) -> str:
        return f"pod {self.namespace}/{self.pod}, container {self.container}"

    async def _connect(
        self, path: str, query: list[tuple[str, str]], protocols: Sequence[Subprotocol]
    ) -> Any:
        url = self.api.websocket_url(f"{path}?{urllib.parse.urlencode(query)}")
        try:
            return await websockets.connect(
                url,
                subprotocols=list(protocols),
                additional_headers=self.api.auth_headers(),
                ssl=self.api.ssl_context,
                max_size=None,
                # The API server's proxying of streams does not need keepalives and a
                # missed pong during a long snapshot must not cut the stream.
                ping_interval=None,
                proxy=None,
                open_timeout=30,
            )
        except (websockets.InvalidStatus, websockets.InvalidHandshake, OSError) as error:
            raise _handshake_error(error, self.description) from error

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdout: StdoutCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the ProcessHost protocol)
    ) -> CommandResult:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/exec"
        query = [("command", arg) for arg in argv]
        query += [("container", self.container), ("stdout", "true"), ("stderr", "true")]
        async with asyncio.timeout(timeout):
            ws: ClientConnection = await self._connect(path, query, EXEC_PROTOCOLS)
            try:
                return await self._read_exec(ws, stdout)
            finally:
                await ws.close()

    async def _read_exec(self, ws: ClientConnection, on_stdout: StdoutCallback | None) -> CommandResult:
        out = bytearray()
        err = bytearray()
        status: bytes | None = None
        try:
            async for message in ws:
                if isinstance(message, str):
                    message = message.encode()
                if not message:
                    continue
                channel, payload = message[0], message[1:]
                if channel == STDOUT and payload:
                    if on_stdout is not None:
                        await on_stdout(bytes(payload))
                    else:
                        out += payload
                elif channel == STDERR and len(err) < _STDERR_LIMIT:
                    err += payload
                elif channel == ERROR:
                    status = (status or b"") + payload
        except websockets.ConnectionClosedError as error:
            raise TransportError(f"The exec stream to {self.description} broke: {error}") from error
        if status is None:
            raise TransportError(
                f"The exec stream to {self.description} ended without an exit status; the pod may have gone."
            )
        code, message = exit_code_from_status(status)
        if code and message and not err:
            err += message.encode()
        return CommandResult(code, bytes(out), bytes(err))

    @contextlib.asynccontextmanager
    async def connect_port(self, port: int) -> AsyncIterator[tuple[str, int]]:
        connections: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._bridge(port, reader, writer)
            except asyncio.CancelledError:
                pass  # connect_port is closing: ending quietly keeps asyncio from logging it
            except Exception as error:  # one broken connection must not kill the listener
                logger.debug("port-forward connection to %s:%d ended: %s", self.description, port, error)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                connections.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        try:
            address = server.sockets[0].getsockname()
            yield ("127.0.0.1", int(address[1]))
        finally:
            server.close()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

    async def _bridge(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/portforward"
        ws: ClientConnection = await self._connect(path, [("ports", str(port))], PORTFORWARD_PROTOCOLS)

        async def upstream() -> None:
            while data := await reader.read(65536):
                await ws.send(b"\x00" + data)

        async def downstream() -> None:
            prefixed: set[int] = set()
            async for message in ws:
                if isinstance(message, str):
                    message = message.encode()
                if not message:
                    continue
                channel, payload = message[0], message[1:]
                if channel not in prefixed:
                    prefixed.add(channel)
                    payload = payload[2:]
                if channel == 0 and payload:
                    writer.write(payload)
                    await writer.drain()
                elif channel == 1 and payload:
                    raise TransportError(
                        f"Port-forward to port {port} of {self.description} failed: "
                        f"{payload.decode('utf-8', 'replace')}"
                    )

        up = asyncio.create_task(upstream())
        down = asyncio.create_task(downstream())
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            up.cancel()
            down.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            await ws.close()
