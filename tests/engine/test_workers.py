"""Worker threads: the heap of one ``worker_threads`` Worker, through its process's inspector.

A leak in a worker (a pool of them, say) is not in the main thread's heap. heapsnap
attaches to the worker through the NodeWorker domain and has it write its own snapshot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heapsnap.engine import CaptureOptions, ProcessSelector, Transfer, capture, capture_inspector
from heapsnap.errors import InvalidInput, WorkerNotFound
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import count_instances, listening_ports, load_snapshot, node_count
from tests.support.nodeproc import WORKER_APP, NodeProcess

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]


@pytest.mark.parametrize(
    ("version", "transfer"),
    [
        ("20", "tempfile"),
        ("20", "stream"),
        ("22", "stream"),
        ("24", "tempfile"),
        ("24", "stream"),
        ("26", "tempfile"),
    ],
)
async def test_a_worker_s_heap_is_captured_and_the_process_left_as_found(
    node_process: StartNode, tmp_path: Path, version: str, transfer: Transfer
) -> None:
    app = node_process(WORKER_APP, version=version)
    thread = int(app.get("/").split()[1])
    before = await listening_ports(app.pid)
    out = tmp_path / "worker.heapsnapshot"
    options = CaptureOptions(worker=thread, transfer=transfer, timeout_seconds=60)
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid), options=options)
    assert (result.target.worker, result.target.transfer) == (thread, transfer)
    assert result.target.node_version.startswith(f"v{version}.")
    snapshot = load_snapshot(out)
    assert node_count(snapshot) == snapshot["snapshot"]["node_count"]
    assert count_instances(snapshot, "WorkerLeak") == 5000
    assert count_instances(snapshot, "LeakyThing") == 0  # the main thread's heap is another
    assert result.summary is not None
    assert any(row.name == "WorkerLeak" and row.count == 5000 for row in result.summary.top_by_count)
    assert await listening_ports(app.pid) == before  # the inspector heapsnap opened is closed
    assert app.get("/") == f"ok {thread}"


async def test_an_unknown_worker_names_the_process_s_workers(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(WORKER_APP)
    before = await listening_ports(app.pid)
    options = CaptureOptions(worker=99, timeout_seconds=60)
    sink = FileSink(tmp_path / "never.heapsnapshot")
    wanted = r"no worker thread with threadId 99 \(its worker threads are 1 \(\[worker 1\] pool-a\)\)"
    with pytest.raises(WorkerNotFound, match=wanted):
        await capture(LocalHost(), sink, selector=ProcessSelector(pid=app.pid), options=options)
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240
    assert await listening_ports(app.pid) == before


async def test_the_signal_method_cannot_take_a_worker(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(WORKER_APP, args=["--heapsnapshot-signal=SIGUSR2"])
    options = CaptureOptions(worker=1, method="signal")
    with pytest.raises(InvalidInput, match="the snapshot signal captures the main thread only"):
        await capture(
            LocalHost(), FileSink(tmp_path / "never"), selector=ProcessSelector(pid=app.pid), options=options
        )
    assert "Debugger listening" not in app.stderr_text()


async def test_a_worker_through_an_open_inspector_and_the_cli(
    node_process: StartNode, tmp_path: Path
) -> None:
    app = node_process(WORKER_APP, args=["--inspect=127.0.0.1:0"])
    (inspector,) = set(await listening_ports(app.pid)) - {app.port}
    out = tmp_path / "open.heapsnapshot"
    result = await capture_inspector(
        f"127.0.0.1:{inspector}", FileSink(out), options=CaptureOptions(worker=1)
    )
    assert result.target.worker == 1 and result.target.pid == app.pid
    assert count_instances(load_snapshot(out), "WorkerLeak") == 5000
    assert inspector in await listening_ports(app.pid)  # not heapsnap's to close

    command = [sys.executable, "-m", "heapsnap.cli", "capture", "--pid", str(app.pid), "--worker", "1"]
    done = subprocess.run([*command, "-o", str(out), "--json"], capture_output=True, text=True, timeout=120)  # noqa: ASYNC221
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["target"]["worker"] == 1
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=120)  # noqa: ASYNC221
    assert f"pid {app.pid}, worker thread 1, node v20." in done.stdout
