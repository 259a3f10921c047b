"""``/healthz`` for liveness and readiness probes; served by every replica, leader or not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_health(port: int, host: str = "0.0.0.0") -> AsyncIterator[int]:
    """Serve ``GET /healthz`` on ``port`` (0 picks a free one); yield the bound port."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        yield int(sockets[0].getsockname()[1]) if sockets else port
    finally:
        await runner.cleanup()
