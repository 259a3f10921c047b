"""Targets in namespaces of their own, captured from this machine's side.

A container, or a systemd service with PrivateTmp=, sees its own /tmp: heapsnap reaches
the snapshot V8 writes there through /proc/PID/root. A process in its own network
namespace opens its inspector on a loopback heapsnap cannot reach: that is refused
before the process is touched (a port of the same number here may be another process's).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heapsnap.engine import CaptureOptions, Method, ProcessSelector, capture
from heapsnap.errors import InspectorUnreachable
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import count_instances, listening_ports, load_snapshot, node_count
from tests.support.nodeproc import LEAKY_APP, NodeProcess

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
