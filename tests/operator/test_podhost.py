"""PodHost's wire protocols against a stand-in for the API server's stream endpoints.

The stand-in is a plain websocket server that speaks the exec channel protocol and the
websocket port-forward protocol the way the API server does; the end-to-end tests run
the same code against the real API server.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from heapsnap.errors import PodError
from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.podhost import PodHost, exit_code_from_status

pytestmark = pytest.mark.asyncio(loop_scope="session")

BLOB = bytes(range(256)) * 1000 + b"\r\n\x00tail"


async def echo_server_port() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class FakeApiServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]], str | None, str | None]] = []
        self.echo_port = 0

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if "/pods/missing/" in request.path:
            body = json.dumps({"kind": "Status", "message": 'pods "missing" not found'}).encode()
            return Response(404, "Not Found", Headers({"Content-Type": "application/json"}), body)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urllib.parse.urlsplit(ws.request.path)
        query = urllib.parse.parse_qs(url.query)
        self.requests.append((url.path, query, ws.subprotocol, ws.request.headers.get("Authorization")))
        if url.path.endswith("/exec"):
            await self.exec(ws, query["command"])
        else:
            await self.portforward(ws, int(query["ports"][0]))

    async def exec(self, ws: ServerConnection, argv: list[str]) -> None:
        if argv[0] == "blob":
            for i in range(0, len(BLOB), 7000):
                await ws.send(b"\x01" + BLOB[i : i + 7000])
            await ws.send(b"\x02warning\n")
            await ws.send(b"\x03" + json.dumps({"status": "Success"}).encode())
        elif argv[0] == "fail":
            status = {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
            }
            await ws.send(b"\x03" + json.dumps(status).encode())
        # "vanish": close with no status at all

    async def portforward(self, ws: ServerConnection, port: int) -> None:
        prefix = port.to_bytes(2, "little")
        await ws.send(b"\x00" + prefix)
        await ws.send(b"\x01" + prefix)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.echo_port)

        async def down() -> None:
            while data := await reader.read(4096):
                await ws.send(b"\x00" + data)

        task = asyncio.create_task(down())
        async for message in ws:
            assert isinstance(message, bytes) and message[0] == 0
            writer.write(message[1:])
            await writer.drain()
        task.cancel()
        writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, PodHost]]:
    api_server = FakeApiServer()
    echo, api_server.echo_port = await echo_server_port()
    async with serve(
        api_server.handler,
        "127.0.0.1",
        0,
        process_request=api_server.process_request,
        subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"],  # type: ignore[list-item]
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        cfg: Any = client.Configuration(host=f"http://127.0.0.1:{port}")
        cfg.api_key = {"authorization": "Bearer sekrit"}
        yield api_server, PodHost(ApiConnection(cfg), "shop", "api-0", "app")
    echo.close()


async def test_exec_streams_binary_stdout_unchanged(fake: tuple[FakeApiServer, PodHost]) -> None:
    api_server, host = fake
    received = bytearray()

    async def on_stdout(data: bytes) -> None:
        received.extend(data)

    result = await host.run(["blob", "-e", "x y"], stdout=on_stdout, timeout=10)
    assert bytes(received) == BLOB
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b"warning\n")
    path, query, protocol, auth = api_server.requests[0]
    assert path == "/api/v1/namespaces/shop/pods/api-0/exec"
    assert query["command"] == ["blob", "-e", "x y"] and query["container"] == ["app"]
    assert protocol == "v5.channel.k8s.io" and auth == "Bearer sekrit"


async def test_exec_exit_code_from_status(fake: tuple[FakeApiServer, PodHost]) -> None:
    _, host = fake
    result = await host.run(["fail"])
    assert result.exit_code == 42


async def test_exec_stream_without_status_is_a_transport_error(fake: tuple[FakeApiServer, PodHost]) -> None:
    _, host = fake
    with pytest.raises(Exception, match="ended without an exit status"):
        await host.run(["vanish"])


async def test_missing_pod_is_pod_not_found(fake: tuple[FakeApiServer, PodHost]) -> None:
    _, host = fake
    host.pod = "missing"
    with pytest.raises(PodError) as info:
        await host.run(["blob"])
    assert info.value.reason == "PodNotFound" and "not found" in info.value.message


async def test_port_forward_bridges_each_connection(fake: tuple[FakeApiServer, PodHost]) -> None:
    api_server, host = fake
    async with host.connect_port(9229) as (address, port):
        assert address == "127.0.0.1"
        for word in (b"hello", b"again"):
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(word)
            await writer.drain()
            assert await reader.readexactly(len(word)) == word.upper()
            writer.close()
    forwards = [r for r in api_server.requests if r[0].endswith("/portforward")]
    assert len(forwards) == 2 and forwards[0][1]["ports"] == ["9229"]
    with pytest.raises(OSError):
        await asyncio.open_connection(address, port)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"status": "Success"}, (0, "")),
        ({"status": "Failure", "reason": "NonZeroExitCode", "message": "m"}, (1, "m")),
        ({"status": "Failure", "reason": "InternalError", "message": "no such file"}, (127, "no such file")),
        (
            {"status": "Failure", "reason": "InternalError", "message": "x: exit status 3"},
            (3, "x: exit status 3"),
        ),
    ],
)
async def test_exit_code_from_status(status: dict[str, Any], expected: tuple[int, str]) -> None:
    assert exit_code_from_status(json.dumps(status).encode()) == expected
