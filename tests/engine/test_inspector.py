"""Inspector captures of real Node.js processes started with no flags, on 20, 22 and 24."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from heapsnap.engine import (
    CaptureOptions,
    ProcessSelector,
    Progress,
    Transfer,
    capture,
    capture_series,
    close_inspector,
)
from heapsnap.engine._agent import Agent
from heapsnap.errors import TransportError
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import count_instances, listening_ports, load_snapshot, node_count
from tests.support.nodeproc import LEAKY_APP, NodeProcess

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]


@pytest.mark.parametrize("transfer", ["stream", "tempfile"])
@pytest.mark.parametrize("version", ["20", "22", "24", "26"])
async def test_capture_of_a_process_started_with_no_flags(
    node_process: StartNode, tmp_path: Path, version: str, transfer: Transfer
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    app = node_process(LEAKY_APP, version=version, env={"TMPDIR": str(scratch)})
    phases: list[str] = []
    written: list[int] = []

    async def on_progress(progress: Progress) -> None:
        if not phases or phases[-1] != progress.phase:
            phases.append(progress.phase)
        if progress.phase == "generating" and progress.bytes_sent:
            written.append(progress.bytes_sent)
            # Followed while V8 writes it: already unlinked, nothing to see in the directory.
            assert not any(scratch.iterdir())

    out = tmp_path / "app.heapsnapshot"
    result = await capture(
        LocalHost(),
        FileSink(out),
        selector=ProcessSelector(pid=app.pid),
        options=CaptureOptions(transfer=transfer),
        on_progress=on_progress,
    )

    snapshot = load_snapshot(out)
    assert node_count(snapshot) == snapshot["snapshot"]["node_count"]
    assert count_instances(snapshot, "LeakyThing") == 100_000
    assert result.artifact.size_bytes == out.stat().st_size
    assert result.target.method == "inspector" and result.target.inspector_opened
    assert result.target.transfer == transfer
    # Streamed chunks arrive after generation; a followed file while V8 is writing it.
    assert bool(written) == (transfer == "tempfile")
    assert result.target.node_version.startswith(f"v{version}.")
    assert phases == ["probing", "activating", "preflight", "generating", "transferring", "done"]
    assert result.preflight is not None and result.preflight.node_count > 0
    if result.summary is not None:
        top = {stat.name: stat.count for stat in result.summary.top_by_count}
        assert top.get("LeakyThing") == 100_000
    # Left as found: still serving, the inspector heapsnap opened is closed again.
    assert app.get("/") == "ok 100000"
    assert await listening_ports(app.pid) == [app.port]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, "scratch"]  # noqa: ASYNC240
    assert not any(scratch.iterdir())


@pytest.mark.parametrize("transfer", ["stream", "tempfile"])
@pytest.mark.parametrize("version", ["20", "22", "24", "26"])
async def test_busy_javascript_does_not_defer_the_snapshot(
    node_process: StartNode, tmp_path: Path, version: str, transfer: Transfer
) -> None:
    stop = tmp_path / "stop"
    busy_app = LEAKY_APP.replace(
        "if (req.url === '/busy') {",
        f"if (req.url === '/spin') {{ while (!require('fs').existsSync({str(stop)!r})) {{}} }}"
        "\n  if (req.url === '/busy') {",
    )
    app = node_process(busy_app, version=version, env={"LEAKY_COUNT": "1000"}, args=["--inspect-port=0"])
    spin = threading.Thread(target=app.get, args=("/spin",))
    spin.start()
    written_while_busy: list[bool] = []

    async def on_progress(progress: Progress) -> None:
        if progress.phase == "transferring" and not written_while_busy:
            written_while_busy.append(spin.is_alive())
            stop.touch()  # it yields: the inspector can close now

    try:
        # Node 22+ would wait for the loop to end (never, here) without a debugger pause first.
        result = await capture(
            LocalHost(),
            FileSink(tmp_path / "busy.heapsnapshot"),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(timeout_seconds=120, transfer=transfer),
            on_progress=on_progress,
        )
        assert written_while_busy == [True]
        assert result.target.transfer == transfer
    finally:
        stop.touch()
        spin.join(timeout=60)
    assert node_count(load_snapshot(tmp_path / "busy.heapsnapshot")) > 0
    assert result.target.inspector_opened and result.warnings == []
    assert app.get("/") == "ok 1000"
    # Opened while JavaScript was busy, Node also queued a start for its event loop: the
    # close must come after it, or the inspector opens again behind heapsnap's back.
    await asyncio.sleep(0.5)
    assert await listening_ports(app.pid) == [app.port]
    assert app.stderr_text().count("Debugger listening") == 1


async def test_an_inspector_already_open_is_used_and_left_open(
    node_process: StartNode, tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, args=["--inspect=127.0.0.1:0"], env={"LEAKY_COUNT": "1000"})
    before = await listening_ports(app.pid)
    result = await capture(
        LocalHost(), FileSink(tmp_path / "open.heapsnapshot"), selector=ProcessSelector(pid=app.pid)
    )
    assert not result.target.inspector_opened
    assert await listening_ports(app.pid) == before
    assert len(before) == 2
    assert app.get("/") == "ok 1000"


async def test_a_failed_look_at_the_closing_inspector_is_a_warning_not_a_lost_snapshot(
    node_process: StartNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = node_process(LEAKY_APP, env={"LEAKY_COUNT": "1000"})

    async def broken(self: Agent, pid: int, port: int, wait: float) -> bool:
        raise TransportError("the exec stream broke")

    monkeypatch.setattr(Agent, "closed", broken)
    out = tmp_path / "kept.heapsnapshot"
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid))

    assert count_instances(load_snapshot(out), "LeakyThing") == 1000
    assert any("may be still listening" in w and "exec stream broke" in w for w in result.warnings)
    monkeypatch.undo()
    # The target was told to close it all the same.
    for _ in range(100):
        if await listening_ports(app.pid) == [app.port]:
            break
        await asyncio.sleep(0.05)
    assert await listening_ports(app.pid) == [app.port]


async def test_an_inspector_left_open_by_a_dead_capturer_is_closed(node_process: StartNode) -> None:
    app = node_process(LEAKY_APP, args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    app.popen.send_signal(signal.SIGUSR1)
    opened: list[int] = []
    for _ in range(100):
        opened = [p for p in await listening_ports(app.pid) if p != app.port]
        if opened:
            break
        await asyncio.sleep(0.05)
    assert opened

    assert await close_inspector(LocalHost(), app.pid, opened[0])
    assert await listening_ports(app.pid) == [app.port]
    assert app.get("/") == "ok 1000"
    # Closing again, or after the process is gone, is a no-op that reports success.
    assert await close_inspector(LocalHost(), app.pid, opened[0])
    app.popen.kill()
    app.popen.wait()
    assert await close_inspector(LocalHost(), app.pid, opened[0])


@pytest.mark.parametrize("transfer", ["stream", "tempfile"])
async def test_series_keeps_node_ids_comparable(
    node_process: StartNode, tmp_path: Path, transfer: Transfer
) -> None:
    app = node_process(LEAKY_APP, version="24", args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    paths = [tmp_path / f"s{i}.heapsnapshot" for i in range(2)]
    results = await capture_series(
        LocalHost(),
        lambda i: FileSink(paths[i]),
        count=2,
        interval_seconds=0,
        selector=ProcessSelector(pid=app.pid),
        options=CaptureOptions(transfer=transfer),
    )
    assert [r.target.transfer for r in results] == [transfer, transfer]
    ids = []
    for path in paths:
        snapshot = load_snapshot(path)
        fields = snapshot["snapshot"]["meta"]["node_fields"]
        width, at = len(fields), fields.index("id")
        ids.append(set(snapshot["nodes"][at::width]))
    # One session: most objects keep their ids between the two snapshots.
    assert len(ids[0] & ids[1]) > 0.9 * len(ids[0])
    assert await listening_ports(app.pid) == [app.port]


async def test_gzip_file(node_process: StartNode, tmp_path: Path) -> None:
    import hashlib

    app = node_process(LEAKY_APP, args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    out = tmp_path / "app.heapsnapshot.gz"
    result = await capture(LocalHost(), FileSink(out, gzip=True), selector=ProcessSelector(pid=app.pid))
    stored = out.read_bytes()
    assert stored[:2] == b"\x1f\x8b"
    assert result.artifact.sha256 == hashlib.sha256(stored).hexdigest()
    assert result.artifact.compressed_bytes == len(stored) < result.artifact.size_bytes
    assert node_count(load_snapshot(out)) > 0
