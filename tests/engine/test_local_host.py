"""Commands on this machine: output in order and whole, errors as raised, nothing left open."""

from __future__ import annotations

import os
import sys
import time

import pytest

from heapsnap.errors import TransportError
from heapsnap.transports.local import LocalHost

MiB = 1 << 20
# Writes N bytes (a counter pattern, so order matters) in 3 MiB writes, then "done" on stderr.
WRITER = (
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "data = bytes(i % 251 for i in range(n))\n"
    "for at in range(0, n, 3 << 20):\n"
    "    sys.stdout.buffer.write(data[at:at + (3 << 20)])\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write('done')\n"
    "sys.exit(int(sys.argv[2]))\n"
)


def expected(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_output_and_exit_code_are_collected() -> None:
    result = await LocalHost().run([sys.executable, "-c", WRITER, "1000", "3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, expected(1000), b"done")


async def test_streamed_output_arrives_whole_in_order_and_in_pieces_of_at_most_a_mebibyte() -> None:
    pieces: list[bytes] = []

    async def take(chunk: bytes) -> None:
        pieces.append(chunk)

    before = open_fds()
    result = await LocalHost().run([sys.executable, "-c", WRITER, str(10 * MiB + 5), "0"], stdout=take)
    assert result.exit_code == 0 and result.stdout == b"" and result.stderr == b"done"
    assert b"".join(pieces) == expected(10 * MiB + 5)
    assert max(len(p) for p in pieces) <= MiB
    assert open_fds() == before


async def test_a_failing_consumer_stops_the_command_and_its_error_comes_through() -> None:
    class SinkFull(Exception):
        pass

    async def take(chunk: bytes) -> None:
        raise SinkFull

    before = open_fds()
    # The writer would block forever on a full pipe if it were not stopped.
    with pytest.raises(SinkFull):
        await LocalHost().run([sys.executable, "-c", WRITER, str(50 * MiB), "0"], stdout=take)
    assert open_fds() == before


async def test_a_command_past_its_timeout_is_stopped() -> None:
    before = open_fds()
    with pytest.raises(TransportError, match=r"did not finish within 0\.5 s"):
        await LocalHost().run(["sleep", "30"], timeout=0.5)
    assert open_fds() == before


async def test_a_command_past_its_timeout_is_killed_even_if_it_ignores_sigterm() -> None:
    # Any binary may be asked --version (/proc/PID/exe may not be node): SIGTERM is not enough.
    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"did not finish within 0\.5 s"):
        await LocalHost().run([sys.executable, "-c", ignores], timeout=0.5)
    assert time.monotonic() - started < 10


async def test_a_missing_program_exits_127() -> None:
    result = await LocalHost().run(["/nonexistent/heapsnap-node"])
    assert result.exit_code == 127 and b"nonexistent" in result.stderr
