"""Raw websocket clients for ``pods/exec`` and ``pods/portforward`` through the API server.

Used by the tests to prove what the API server (1.34) and kwok's kubelet server accept,
byte for byte, without any Kubernetes client library in between.

Exec (``channel.k8s.io`` family): every binary message is one channel byte (0 stdin,
1 stdout, 2 stderr, 3 error, 4 resize; 255 close in v5) followed by data. The error
channel carries a ``Status`` JSON in v4/v5 (exit code in ``details.causes``).

Port-forward (``v4.channel.k8s.io``): for the i-th requested port, channel 2i carries
data and 2i+1 errors; the server's first message on each is the port number, two bytes
little-endian. One websocket is one TCP connection to the target.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from heapsnap.devcluster.harness import Cluster

STDOUT, STDERR, ERROR = 1, 2, 3
KWOK_EXIT = re.compile(r"exit status (\d+)$")


@dataclass
class ExecResult:
    subprotocol: str | None
    stdout: bytes
    stderr: bytes
    error: bytes

    @property
    def status(self) -> dict[str, Any] | None:
        """The error channel's Status (v4/v5), or None when it sent none."""
        return json.loads(self.error) if self.error.strip().startswith(b"{") else None

    @property
    def exit_code(self) -> int:
        status = self.status
        if status is None:
            raise ValueError(f"no Status on the error channel: {self.error!r}")
        if status.get("status") == "Success":
            return 0
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        # kwok v0.8.0 wraps the exit error, so cri-streaming reports it as InternalError
        # with the text "...: exit status N" instead of NonZeroExitCode with an ExitCode cause.
        match = KWOK_EXIT.search(status.get("message", ""))
        if status.get("reason") == "InternalError" and match:
            return int(match.group(1))
        raise ValueError(f"Status without an exit code: {status}")


def _ws_url(cluster: Cluster, namespace: str, pod: str, verb: str, query: list[tuple[str, str]]) -> str:
    base = cluster.server.replace("https://", "wss://", 1)
    return f"{base}/api/v1/namespaces/{namespace}/pods/{pod}/{verb}?{urlencode(query)}"


async def exec_ws(
    cluster: Cluster,
    namespace: str,
    pod: str,
    command: Sequence[str],
    *,
    container: str | None = None,
    subprotocols: Sequence[str] = ("v5.channel.k8s.io",),
) -> ExecResult:
    """Runs ``command`` in the pod over one websocket and collects every channel."""
    query = [("command", part) for part in command] + [("stdout", "true"), ("stderr", "true")]
    if container:
        query.append(("container", container))
    out = {STDOUT: bytearray(), STDERR: bytearray(), ERROR: bytearray()}
    async with websockets.connect(
        _ws_url(cluster, namespace, pod, "exec", query),
        ssl=cluster.ssl_context(),
        subprotocols=[Subprotocol(p) for p in subprotocols],
        max_size=None,
        ping_interval=None,
    ) as ws:
        async for message in ws:
            assert isinstance(message, bytes), f"text frame on a binary protocol: {message!r}"
            if message and message[0] in out:
                out[message[0]] += message[1:]
        return ExecResult(ws.subprotocol, bytes(out[STDOUT]), bytes(out[STDERR]), bytes(out[ERROR]))


class PortForwardStream:
    """One TCP connection to ``port`` in the pod, over a v4 websocket port-forward."""

    def __init__(self, ws: websockets.ClientConnection, port: int) -> None:
        self.ws = ws
        self.port = port
        self.errors = bytearray()

    async def _handshake(self) -> None:
        seen: set[int] = set()
        while seen != {0, 1}:
            message = await self.ws.recv()
            assert isinstance(message, bytes)
            channel, data = message[0], message[1:]
            # The server announces the port on both channels first, little-endian.
            assert int.from_bytes(data[:2], "little") == self.port, data
            seen.add(channel)

    async def send(self, data: bytes) -> None:
        await self.ws.send(b"\x00" + data)

    async def recv(self) -> bytes:
        """Next data from the target; b"" when the connection ended."""
        while True:
            try:
                message = await self.ws.recv()
            except websockets.ConnectionClosed:
                return b""
            assert isinstance(message, bytes)
            if message[0] == 0:
                return message[1:]
            self.errors += message[1:]


@asynccontextmanager
async def port_forward(
    cluster: Cluster, namespace: str, pod: str, port: int, *, subprotocol: str = "v4.channel.k8s.io"
) -> AsyncIterator[PortForwardStream]:
    async with websockets.connect(
        _ws_url(cluster, namespace, pod, "portforward", [("ports", str(port))]),
        ssl=cluster.ssl_context(),
        subprotocols=[Subprotocol(subprotocol)],
        max_size=None,
        ping_interval=None,
    ) as ws:
        stream = PortForwardStream(ws, port)
        await asyncio.wait_for(stream._handshake(), 10)
        yield stream


async def http_get(stream: PortForwardStream, path: str) -> bytes:
    """A minimal HTTP/1.1 GET through the stream; returns the body."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{stream.port}\r\nConnection: close\r\n\r\n"
    await stream.send(request.encode())
    raw = bytearray()
    while b"\r\n\r\n" not in raw:
        chunk = await stream.recv()
        assert chunk, f"connection closed before the headers: {bytes(raw)!r}"
        raw += chunk
    head, body = bytes(raw).split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = await stream.recv()
        assert chunk, "connection closed in the body"
        body += chunk
    return body[:length]


class CdpOverStream:
    """A CDP websocket session (sans-I/O websockets) inside a port-forward stream."""

    def __init__(self, stream: PortForwardStream, path: str) -> None:
        self.stream = stream
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{stream.port}{path}"), max_size=None)
        self.next_id = 0

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await self.stream.send(data)

    async def _events(self) -> list[Frame | Response]:
        while True:
            events = self.protocol.events_received()
            if events:
                return list(events)
            chunk = await self.stream.recv()
            if not chunk:
                self.protocol.receive_eof()
                raise ConnectionError(f"inspector connection closed: {self.protocol.close_exc}")
            self.protocol.receive_data(chunk)

    async def open(self) -> None:
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        events = await self._events()
        response = events[0]
        assert isinstance(response, Response), response
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        self.protocol.send_text(
            json.dumps({"id": self.next_id, "method": method, "params": params or {}}).encode()
        )
        await self._flush()
        while True:
            for event in await self._events():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    message: dict[str, Any] = json.loads(event.data)
                    if message.get("id") == self.next_id:
                        return message
