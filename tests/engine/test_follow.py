"""Following a file the target writes: heapsnap's own follower (this machine) and the
agent's ``tail`` (run next to a target in a pod) keep the same contract, checked here on
both against a real writer process."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from heapsnap.engine._agent import Agent
from heapsnap.k8s.podhost import PodHost
from heapsnap.transports.base import CommandResult, FollowsFiles, StdoutCallback
from heapsnap.transports.local import LocalHost

MiB = 1 << 20
# Creates PATH after a moment, writes N counter-pattern bytes into it 1 MiB at a time,
# keeps it open HOLD seconds more, closes it and lives on (as a target does).
WRITER = (
    "import sys, time\n"
    "path, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "time.sleep(0.3)\n"
    "data = bytes(i % 251 for i in range(n))\n"
    "with open(path, 'wb') as f:\n"
    "    for at in range(0, n, 1 << 20):\n"
    "        f.write(data[at:at + (1 << 20)])\n"
    "        f.flush()\n"
    "        time.sleep(0.05)\n"
    "    time.sleep(hold)\n"
    "time.sleep(60)\n"
)


@pytest.fixture(params=["heapsnap", "agent"])
def follower(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


async def follow(kind: str, pid: int, path: Path, limit: float, take: StdoutCallback) -> CommandResult:
    if kind == "heapsnap":
        return await LocalHost().follow_file(pid, str(path), limit, take)
    agent = await Agent.locate(LocalHost())  # node on PATH, as next to a target in a pod
    return await agent.run("tail", str(pid), str(path), str(limit), stdout=take, limit=None)


def collector(chunks: list[bytes]) -> StdoutCallback:
    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    return collect


def spawn(processes: list[subprocess.Popen[bytes]], *argv: str) -> int:
    process = subprocess.Popen(argv)
    processes.append(process)
    return process.pid


def writer(processes: list[subprocess.Popen[bytes]], path: Path, size: int, hold: float) -> int:
    return spawn(processes, sys.executable, "-c", WRITER, str(path), str(size), str(hold))


async def test_the_file_arrives_whole_as_written_and_is_gone_from_disk(
    follower: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    path, size = tmp_path / "snap.heapsnapshot", 5 * MiB + 123
    pid = writer(processes, path, size, hold=0.3)
    chunks: list[bytes] = []

    result = await follow(follower, pid, path, 30, collector(chunks))

    assert result.exit_code == 0, result.stderr
    assert b"".join(chunks) == bytes(i % 251 for i in range(size))
    assert len(chunks) > 1  # passed on while being written, not at the end
    assert not path.exists()
    assert processes[0].poll() is None  # the writer is left running


async def test_a_writer_that_dies_mid_file_is_exit_3_and_leaves_no_file(
    follower: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    path = tmp_path / "snap.heapsnapshot"
    pid = writer(processes, path, 2 * MiB, hold=60)
    chunks: list[bytes] = []

    async def kill_after_the_first_chunk(chunk: bytes) -> None:
        chunks.append(chunk)
        processes[0].kill()
        processes[0].wait()

    result = await follow(follower, pid, path, 30, kill_after_the_first_chunk)

    assert result.exit_code == 3, result.stderr
    assert b"exited while writing" in result.stderr
    assert chunks and not path.exists()


async def test_a_target_that_exits_before_writing_is_exit_3(
    follower: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    pid = spawn(processes, sys.executable, "-c", "import time; time.sleep(0.3)")
    result = await follow(follower, pid, tmp_path / "never", 30, collector([]))
    assert result.exit_code == 3
    assert b"exited before writing" in result.stderr


async def test_no_file_within_the_limit_is_exit_4(
    follower: str, processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    pid = spawn(processes, "sleep", "30")
    result = await follow(follower, pid, tmp_path / "never", 0.5, collector([]))
    assert result.exit_code == 4
    assert b"no snapshot file appeared" in result.stderr


def test_only_this_machine_follows_files_itself() -> None:
    # Agent.tail reads the file in-process here, and runs the agent in a pod.
    assert isinstance(LocalHost(), FollowsFiles)
    assert not issubclass(PodHost, FollowsFiles)


async def test_a_failing_consumer_s_own_error_comes_through_and_no_file_is_left(
    processes: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # A full disk in the file sink is the sink's error, not a failure to read the snapshot.
    path = tmp_path / "snap.heapsnapshot"
    pid = writer(processes, path, 3 * MiB, hold=0.3)

    async def disk_full(chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await LocalHost().follow_file(pid, str(path), 30, disk_full)
    assert not path.exists()
    assert processes[0].poll() is None
