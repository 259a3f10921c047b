"""Engine tests run real Node.js targets (tests.support.nodeproc) on this machine through
``LocalHost``; nothing is faked. Helpers here read the captured files back."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

from heapsnap.engine._agent import Agent
from heapsnap.transports.local import LocalHost


def load_snapshot(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    snapshot: dict[str, Any] = json.loads(raw)
    return snapshot


def node_count(snapshot: dict[str, Any]) -> int:
    fields = snapshot["snapshot"]["meta"]["node_fields"]
    assert len(snapshot["nodes"]) % len(fields) == 0
    return len(snapshot["nodes"]) // len(fields)


def count_instances(snapshot: dict[str, Any], name: str) -> int:
    meta = snapshot["snapshot"]["meta"]
    fields = meta["node_fields"]
    width, type_at, name_at = len(fields), fields.index("type"), fields.index("name")
    object_type = meta["node_types"][0].index("object")
    strings = snapshot["strings"]
    nodes = snapshot["nodes"]
    return sum(
        1
        for i in range(0, len(nodes), width)
        if nodes[i + type_at] == object_type and strings[nodes[i + name_at]] == name
    )


async def listening_ports(pid: int) -> list[int]:
    """The TCP ports ``pid`` listens on, as heapsnap's own agent sees them."""
    agent = await Agent.locate(LocalHost(), pid)
    processes = (await agent.probe(pid)).processes
    return processes[0].listening if processes else []


async def read_until(stream: asyncio.StreamReader, words: str, said: str = "") -> str:
    """What a child process says on ``stream`` up to the line with ``words`` (after ``said``)."""
    while words not in said:
        line = (await stream.readline()).decode()
        assert line, f"it ended before {words!r}: {said}"
        said += line
    return said
