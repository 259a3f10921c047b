"""TTL, Lease expiry and /healthz: the small pure parts, without an API server."""

from __future__ import annotations

import asyncio
import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from heapsnap.controller.health import serve_health
from heapsnap.controller.leader import expired
from heapsnap.controller.ttl import due

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOW = datetime.datetime(2026, 11, 26, 7, 0, 0, tzinfo=datetime.UTC)


def obj(ttl: int | None, phase: str | None, completed: str | None) -> dict[str, Any]:
    spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    return {"spec": spec, "status": {"phase": phase, "completionTime": completed}}


@pytest.mark.parametrize(
    ("o", "expected"),
    [
        (obj(60, "Succeeded", "2026-11-26T06:58:00Z"), True),
        (obj(60, "Failed", "2026-11-26T06:59:30Z"), False),
        (obj(0, "Failed", "2026-11-26T07:00:00Z"), True),
        (obj(None, "Succeeded", "2026-11-26T06:00:00Z"), False),
        (obj(1, "Capturing", None), False),
    ],
)
async def test_ttl_due(o: dict[str, Any], expected: bool) -> None:
    assert due(o, NOW) is expected


def lease(holder: str | None, renewed_seconds_ago: float | None, duration: int = 15) -> Any:
    renew = None if renewed_seconds_ago is None else NOW - datetime.timedelta(seconds=renewed_seconds_ago)
    return SimpleNamespace(
        spec=SimpleNamespace(
            holder_identity=holder, renew_time=renew, acquire_time=None, lease_duration_seconds=duration
        )
    )


@pytest.mark.parametrize(
    ("lease_", "expected"),
    [
        (lease("a", 5), False),
        (lease("a", 16), True),
        (lease(None, 1), True),
        (lease("a", None), True),
    ],
)
async def test_lease_expiry(lease_: Any, expected: bool) -> None:
    assert expired(lease_, NOW) is expected


async def test_healthz_answers() -> None:
    async with serve_health(0, host="127.0.0.1") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok\n")
