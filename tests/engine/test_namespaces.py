"""Targets in namespaces of their own, captured from this machine's side.

A container, or a systemd service with PrivateTmp=, sees its own /tmp: heapsnap reaches
the snapshot V8 writes there through /proc/PID/root. A process in its own network
namespace opens its inspector on a loopback heapsnap cannot reach: that is refused
before the process is touched (a port of the same number here may be another process's).
A container's node built for another system (Alpine's, with musl) cannot run from this
machine's side: this machine's node runs the agent, and the target's version is asked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from heapsnap.engine import CaptureOptions, Method, ProcessSelector, Transfer, capture
from heapsnap.errors import InspectorUnreachable, ProcessNotFound
from heapsnap.sinks.file import FileSink
from heapsnap.transports.base import CommandResult, StdoutCallback
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import count_instances, listening_ports, load_snapshot, node_count
from tests.support.nodeproc import LEAKY_APP, NodeProcess, node_binary

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="unshare --mount needs root (CI runs as root)"),
]
StartNode = Callable[..., NodeProcess]
SMALL = {"LEAKY_COUNT": "1000"}
# A hang here is the failure being tested for: fail in a minute, not at the test's timeout.
OPTIONS = CaptureOptions(timeout_seconds=60)


def namespaces(private_tmp: Path, *, network: bool = False) -> list[str]:
    """A wrapper for ``start_node``: its own mounts with ``private_tmp`` as /tmp, and its own
    network (loopback up) if asked."""
    setup = f"mount --bind {private_tmp} /tmp"
    if network:
        setup = f"ip link set lo up && {setup}"
    flags = ["--mount", "--propagation", "private", *(["--net"] if network else [])]
    return ["unshare", *flags, "sh", "-c", f'{setup} && exec "$@"', "sh"]


def nothing_in(directory: Path) -> bool:
    return not any(directory.iterdir())


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    directory = tmp_path / "private-tmp"
    directory.mkdir()
    return directory


async def test_a_private_tmp_is_reached_through_the_process_s_root(
    node_process: StartNode, private_tmp: Path, tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, env=SMALL, cwd="/", wrapper=namespaces(private_tmp))
    out = tmp_path / "private.heapsnapshot"
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid), options=OPTIONS)
    assert (result.target.method, result.target.transfer) == ("inspector", "tempfile")
    snapshot = load_snapshot(out)
    assert node_count(snapshot) == snapshot["snapshot"]["node_count"]
    assert count_instances(snapshot, "LeakyThing") == 1000
    assert nothing_in(private_tmp)  # V8 wrote there; nothing is left
    assert app.get("/") == "ok 1000"


@pytest.mark.parametrize(
    ("network", "method"), [(False, "signal"), (True, "auto")], ids=["private-tmp", "own-network"]
)
async def test_the_signal_method_follows_a_private_diagnostic_dir(
    node_process: StartNode, private_tmp: Path, tmp_path: Path, network: bool, method: Method
) -> None:
    app = node_process(
        LEAKY_APP,
        args=["--heapsnapshot-signal=SIGUSR2", "--diagnostic-dir=/tmp"],
        env=SMALL,
        cwd="/",
        wrapper=namespaces(private_tmp, network=network),
    )
    out = tmp_path / "signal.heapsnapshot"
    options = CaptureOptions(method=method, timeout_seconds=60)
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid), options=options)
    assert result.target.method == "signal"  # with auto: its inspector is out of reach
    assert count_instances(load_snapshot(out), "LeakyThing") == 1000
    assert nothing_in(private_tmp)
    assert "Debugger listening" not in app.stderr_text()


async def test_another_network_is_refused_before_the_process_is_touched(
    node_process: StartNode, private_tmp: Path, tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, env=SMALL, cwd="/", wrapper=namespaces(private_tmp, network=True))
    sink = FileSink(tmp_path / "never.heapsnapshot")
    with pytest.raises(InspectorUnreachable, match=rf"network namespace.*nsenter --target {app.pid} --net"):
        await capture(LocalHost(), sink, selector=ProcessSelector(pid=app.pid), options=OPTIONS)
    assert list(tmp_path.glob("*.heapsnapshot")) == []  # noqa: ASYNC240
    assert "Debugger listening" not in app.stderr_text()


async def test_the_advice_works_heapsnap_in_the_process_s_network(
    node_process: StartNode, private_tmp: Path, tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, env=SMALL, cwd="/", wrapper=namespaces(private_tmp, network=True))
    before = await listening_ports(app.pid)  # in its own network: /proc/PID/net is the process's
    out = tmp_path / "nsenter.heapsnapshot"
    command = ["nsenter", "--target", str(app.pid), "--net"]
    command += [sys.executable, "-m", "heapsnap.cli", "capture", "--pid", str(app.pid), "-o", str(out)]
    finished = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert count_instances(load_snapshot(out), "LeakyThing") == 1000
    assert nothing_in(private_tmp)
    assert await listening_ports(app.pid) == before  # the inspector heapsnap opened is closed
    assert "Debugger listening" in app.stderr_text()  # (it was opened: stops the process)


def set_interpreter(binary: Path, interpreter: str) -> None:
    """Point an ELF64 executable's PT_INTERP at ``interpreter`` (no longer than the old one)."""
    with binary.open("r+b") as elf:
        header = elf.read(64)
        phoff, phentsize, phnum = (
            struct.unpack_from("<Q", header, 32)[0],
            *struct.unpack_from("<HH", header, 54),
        )
        for index in range(phnum):
            elf.seek(phoff + index * phentsize)
            kind, _, offset, _, _, size = struct.unpack("<IIQQQQ", elf.read(40))
            if kind == 3:  # PT_INTERP
                assert len(interpreter) < size
                elf.seek(offset)
                elf.write(interpreter.encode().ljust(size, b"\0"))
                return
    raise AssertionError(f"{binary} has no PT_INTERP")


@pytest.fixture
def foreign_node(private_tmp: Path) -> Callable[[str], list[str]]:
    """A wrapper for ``start_node`` that runs a copy of Node.js whose loader exists only in
    the process's own /tmp: like a container's node built for musl, it runs in there and
    cannot be run from this machine's side."""

    def wrapper(version: str) -> list[str]:
        # Both in the process's own /tmp, where its loader is found.
        shutil.copy(shutil.which(node_binary(version)) or "", private_tmp / "node")
        set_interpreter(private_tmp / "node", "/tmp/ld-foreign.so")
        shutil.copy(Path("/lib64/ld-linux-x86-64.so.2").resolve(), private_tmp / "ld-foreign.so")
        setup = f"mount --bind {private_tmp} /tmp"
        unshare = ["unshare", "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", f'{setup} && shift && exec /tmp/node "$@"', "sh"]

    return wrapper


@pytest.mark.parametrize("transfer", ["tempfile", "stream"])
async def test_a_node_that_cannot_run_here_is_captured_with_this_machine_s_node(
    node_process: StartNode,
    foreign_node: Callable[[str], list[str]],
    private_tmp: Path,
    tmp_path: Path,
    transfer: Transfer,
) -> None:
    app = node_process(LEAKY_APP, version="24", env=SMALL, cwd="/", wrapper=foreign_node("24"))
    ran = await LocalHost().run([f"/proc/{app.pid}/exe", "--version"])
    assert ran.exit_code == 127  # the case under test: its binary does not start from here
    out = tmp_path / "foreign.heapsnapshot"
    options = CaptureOptions(transfer=transfer, timeout_seconds=60)
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid), options=options)
    # The version is the target's (Node 24: 1 MiB chunks, the debugger paused for a stream),
    # not that of the node that ran the agent.
    assert result.target.node_version.startswith("v24."), result.target
    assert result.target.transfer == transfer
    snapshot = load_snapshot(out)
    assert len(snapshot["snapshot"]["meta"]["node_fields"]) == 6  # Node 24's
    assert count_instances(snapshot, "LeakyThing") == 1000
    assert {f.name for f in private_tmp.iterdir()} == {"ld-foreign.so", "node"}  # noqa: ASYNC240


class NoNodeHere(LocalHost):
    """This machine, without a Node.js binary of its own."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdout: StdoutCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the ProcessHost protocol)
    ) -> CommandResult:
        if not argv[0].startswith("/proc/") or argv[0] == "/proc/1/exe":
            return CommandResult(exit_code=127, stderr=f"No such file or directory: {argv[0]!r}".encode())
        return await super().run(argv, stdout=stdout, timeout=timeout)


async def test_no_node_to_run_here_names_both_causes_and_the_fixes(
    node_process: StartNode, foreign_node: Callable[[str], list[str]], tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, env=SMALL, cwd="/", wrapper=foreign_node("20"))
    sink = FileSink(tmp_path / "never.heapsnapshot")
    with pytest.raises(ProcessNotFound) as raised:
        await capture(NoNodeHere(), sink, selector=ProcessSelector(pid=app.pid), options=OPTIONS)
    message = str(raised.value)
    assert f"Its own binary (/proc/{app.pid}/exe) did not start here" in message
    assert "built for another system" in message and "install Node.js here" in message
    assert list(tmp_path.glob("*.heapsnapshot")) == []  # noqa: ASYNC240
    assert "Debugger listening" not in app.stderr_text()
