"""Where a tempfile capture may write: the choice among the target's directories.

The agent's answers are given here (one layer under test); tests/engine/test_inspector.py
runs both transfers against real processes.
"""

from __future__ import annotations

from typing import Any

import pytest

from heapsnap.engine import CaptureOptions, PreflightEstimate
from heapsnap.engine._agent import DirCheck, NodeProcessInfo
from heapsnap.engine._session import CaptureSession, Inspection, Reporter
from heapsnap.engine._transfers import FILE_BYTES_PER_NODE, scratch_dir
from heapsnap.errors import NoScratchSpace

NODES = 1_000_000
NEED = int(NODES * FILE_BYTES_PER_NODE * 1.5)


class Agent:
    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def writable(self, pid: int, dirs: list[str]) -> list[DirCheck]:
        self.asked += dirs
        return [DirCheck(d, **self.answers.get(d, {"writable": False})) for d in dirs]


def context(
    answers: dict[str, dict[str, Any]], argv: list[str] | None = None, options: CaptureOptions | None = None
) -> Inspection:
    info = NodeProcessInfo(
        pid=7,
        argv=argv or ["node", "server.js"],
        exe="/usr/bin/node",
        is_node=True,
        cwd="/app",
        uid=1000,
        sigcgt=0,
        rss_bytes=0,
        node_options=None,
        listening=[],
        memory_max=None,
        memory_current=None,
        mem_available=None,
        tmpdir="/scratch",
    )
    preflight = PreflightEstimate(NODES, NODES * 270, None, 1.0)
    session = CaptureSession(None, Agent(answers), info, options or CaptureOptions(), Reporter(None))  # type: ignore[arg-type]
    return Inspection(session, None, None, preflight)  # type: ignore[arg-type]


ROOMY = {"writable": True, "free": NEED, "tmpfs": False}
TMPFS = {**ROOMY, "tmpfs": True}


@pytest.mark.parametrize(
    ("answers", "argv", "chosen"),
    [
        # $TMPDIR first, then /tmp, then the working directory.
        ({"/scratch": ROOMY, "/tmp": ROOMY}, None, "/scratch"),
        ({"/tmp": ROOMY, "/app": ROOMY}, None, "/tmp"),
        # tmpfs is memory; too little room is skipped; an unknown free space is accepted.
        (
            {"/scratch": {**ROOMY, "tmpfs": True}, "/tmp": {**ROOMY, "free": NEED - 1}, "/app": ROOMY},
            None,
            "/app",
        ),
        ({"/tmp": {"writable": True, "free": None, "tmpfs": None}}, None, "/tmp"),
        # --diagnostic-dir (relative to the working directory) comes before everything else.
        (
            {"/app/diag": ROOMY, "/scratch": ROOMY},
            ["node", "--diagnostic-dir=diag", "server.js"],
            "/app/diag",
        ),
    ],
)
async def test_auto_takes_the_first_writable_disk_directory_with_room(
    answers: dict[str, dict[str, Any]], argv: list[str] | None, chosen: str
) -> None:
    assert await scratch_dir(context(answers, argv, CaptureOptions())) == chosen


async def test_auto_streams_when_no_directory_fits_and_tempfile_says_why() -> None:
    answers = {"/scratch": TMPFS, "/tmp": {**ROOMY, "free": 1 << 20}}
    assert await scratch_dir(context(answers, options=CaptureOptions())) is None
    with pytest.raises(NoScratchSpace) as error:
        await scratch_dir(context(answers, options=CaptureOptions(transfer="tempfile")))
    message = error.value.message
    assert (
        "/scratch is tmpfs" in message and "/tmp has 1 MiB free" in message and "/app not writable" in message
    )
    assert "transfer stream" in message


async def test_stream_never_asks_the_target() -> None:
    ctx = context({"/tmp": ROOMY}, options=CaptureOptions(transfer="stream"))
    assert await scratch_dir(ctx) is None
    assert ctx.session.agent.asked == []  # type: ignore[attr-defined]
