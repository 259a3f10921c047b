"""A minimal Chrome DevTools Protocol client for Node's inspector.

Node's inspector needs three things the websockets defaults get wrong: no pings (it
drops the connection on a ping frame), no message size limit (Node 24+ sends 1 MiB
chunks inside larger JSON messages), and an IP address in the Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from heapsnap.errors import InspectorUnreachable, TargetExited

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class CdpClosed(Exception):
    """The inspector connection closed before a command was answered."""


class CdpCommandError(Exception):
    pass


class CdpChannel:
    """Commands and their replies, and events, over one CDP session: a process's own
    (``CdpSession``) or a worker thread's, carried inside it (``WorkerSession``)."""

    def __init__(self) -> None:
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.on_event: EventHandler | None = None
        self.closed_error: BaseException | None = None

    async def _transmit(self, text: str) -> None:
        raise NotImplementedError

    async def _reply(self, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        return await future

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.closed_error is not None:
            raise CdpClosed(str(self.closed_error))
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            await self._transmit(json.dumps({"id": ident, "method": method, "params": params or {}}))
            return await self._reply(future)
        finally:
            self._pending.pop(ident, None)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise CdpCommandError(json.dumps(reply["exceptionDetails"])[:500])
        return reply.get("result", {}).get("value")

    async def _receive(self, message: dict[str, Any]) -> None:
        if "id" in message:
            future = self._pending.pop(message["id"], None)
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(CdpCommandError(message["error"].get("message", str(message))))
            else:
                future.set_result(message.get("result", {}))
        elif self.on_event is not None:
            await self.on_event(message.get("method", ""), message.get("params", {}))

    def _close_pending(self, error: BaseException) -> None:
        if self.closed_error is None:
            self.closed_error = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpClosed(str(self.closed_error)))
        self._pending.clear()


class CdpSession(CdpChannel):
    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self._ws = ws
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str, *, queue: int = 16) -> CdpSession:
        """``queue`` messages are read ahead: what heapsnap does not buffer, the target
        does (the inspector has no backpressure), so it is sized to about 10 MB."""
        import websockets  # ~0.1 s: the CLI imports it while it probes (heapsnap.cli.capture)

        try:
            # close_timeout: a port-forward may never pass on the target's closing
            # handshake, and waiting the default 10 s for it delays every pod capture.
            ws = await websockets.connect(
                url, ping_interval=None, max_size=None, max_queue=queue, open_timeout=10, close_timeout=1
            )
        except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as error:
            raise InspectorUnreachable(f"Could not connect to the inspector at {url}: {error}") from error
        return cls(ws)

    async def _transmit(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(text)
        except ConnectionClosed as error:
            raise CdpClosed(str(error)) from error

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self._ws:
                await self._receive(json.loads(raw))
        except ConnectionClosed as error:
            self.closed_error = error
        except Exception as error:  # a failing event handler ends the session
            self.closed_error = error
        finally:
            self._close_pending(CdpClosed("the inspector closed the connection"))

    async def closed_by_peer(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bounded wait)
        """Wait up to ``timeout`` for the other side to end the session."""
        done, _ = await asyncio.wait({self._reader}, timeout=timeout)
        return bool(done)

    def abandon(self) -> None:
        """Drop the connection without a closing handshake nobody would answer."""
        self._ws.transport.abort()

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class WorkerSession(CdpChannel):
    """A worker thread's session, carried by its process's session (the NodeWorker
    domain): commands go in ``NodeWorker.sendMessageToWorker``, replies and events come
    back in ``NodeWorker.receivedMessageFromWorker``."""

    def __init__(self, parent: CdpSession, session_id: str, title: str) -> None:
        super().__init__()
        self.parent = parent
        self.session_id = session_id
        self.title = title

    async def _transmit(self, text: str) -> None:
        params = {"sessionId": self.session_id, "message": text}
        await self.parent.send("NodeWorker.sendMessageToWorker", params)

    async def _reply(self, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        # The worker answers through the process's connection: if that closes, so does this.
        either: set[asyncio.Future[Any]] = {future, self.parent._reader}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():
            self._close_pending(self.parent.closed_error or CdpClosed("the inspector closed the connection"))
        return await future

    async def route(self, method: str, params: dict[str, Any]) -> None:
        """The process session's event handler while this session is open."""
        if params.get("sessionId") != self.session_id:
            return
        if method == "NodeWorker.receivedMessageFromWorker":
            await self._receive(json.loads(str(params["message"])))
        elif method == "NodeWorker.detachedFromWorker":
            self._close_pending(
                TargetExited(f"{self.title} exited during the capture; no snapshot was stored.")
            )
