"""heapsnap gives way to the target: its threads, its subprocesses and its agent run
below the target's priority while V8 writes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from heapsnap._priority import yield_cpu
from heapsnap.engine._agent import Agent
from heapsnap.transports.local import LocalHost

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")


def test_a_thread_that_yields_passes_it_on_to_what_it_starts() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int] = {}

    def work() -> None:
        yield_cpu()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        inner = threading.Thread(target=lambda: seen.update(inner=os.getpriority(os.PRIO_PROCESS, 0)))
        inner.start()
        inner.join()
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seen["child"] = int(child.stdout)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    lowered = min(19, own + 10)
    assert seen == {"thread": lowered, "inner": lowered, "child": lowered}
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the caller's own thread is untouched


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _niceness_of_runs(marker: str) -> list[int]:
    """The nice values of this process's children whose command line holds ``marker``."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and marker.encode() in command:
                found.append(_niceness(int(entry.name)))
    return found


def test_the_agent_reads_the_snapshot_below_the_target_s_priority(tmp_path: Path) -> None:
    target = subprocess.Popen(["sleep", "30"])  # holds no file: the agent reads it to the end
    snapshot = tmp_path / "snap.heapsnapshot"
    snapshot.write_bytes(b"x" * (8 << 20))
    seen: list[list[int]] = []

    async def follow() -> int:
        agent = await Agent.locate(LocalHost(), target.pid)

        async def take(chunk: bytes) -> None:
            if not seen:
                seen.append(_niceness_of_runs(str(snapshot)))

        result = await agent.run("tail", str(target.pid), str(snapshot), "30", stdout=take, limit=None)
        return result.exit_code

    try:
        target_nice = _niceness(target.pid)
        assert asyncio.run(follow()) == 0
    finally:
        target.kill()
        target.wait()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == [[min(19, max(own, target_nice + 10))]]
    assert not snapshot.exists()  # opened and unlinked
