"""``/healthz`` for liveness and readiness probes, and ``/metrics`` for Prometheus; served
by every replica, leader or not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from heapsnap.controller.metrics import Metrics


@contextlib.asynccontextmanager
async def serve_health(
    port: int, host: str = "0.0.0.0", metrics: Metrics | None = None
) -> AsyncIterator[int]:
    """Serve ``GET /healthz`` (and ``/metrics``) on ``port`` (0 picks a free one); yield the port."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    if metrics is not None:

        async def scrape(_: web.Request) -> web.Response:
            body, content_type = metrics.exposition()
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", scrape)
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
