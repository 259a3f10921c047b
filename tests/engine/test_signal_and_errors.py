"""The signal method, and every bad input the engine must refuse with a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from heapsnap.engine import CaptureOptions, ProcessSelector, Progress, capture
from heapsnap.errors import (
    DiagnosticDirNotWritable,
    InspectorDisabled,
    InspectorPortTaken,
    NotNodeProcess,
    PreflightRefused,
    ProcessNotFound,
    SignalNotHandled,
    TargetExited,
)
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import listening_ports, load_snapshot, node_count
from tests.support.nodeproc import LEAKY_APP, NodeProcess

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]
SMALL = {"LEAKY_COUNT": "1000"}


def nothing_left(directory: Path) -> bool:
    return not any(directory.iterdir())


@pytest.mark.parametrize("version", ["20", "24", "26"])
async def test_signal_method(node_process: StartNode, tmp_path: Path, version: str) -> None:
    diag = tmp_path / "diag"
    diag.mkdir()
    app = node_process(
        LEAKY_APP,
        version=version,
        args=["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"],
        env=SMALL,
    )
    out = tmp_path / "out" / "sig.heapsnapshot"
    out.parent.mkdir()
    result = await capture(
        LocalHost(),
        FileSink(out),
        selector=ProcessSelector(pid=app.pid),
        options=CaptureOptions(method="signal"),
    )
    assert result.target.method == "signal"
    snapshot = load_snapshot(out)
    assert node_count(snapshot) == snapshot["snapshot"]["node_count"]
    assert nothing_left(diag)
    assert app.get("/") == "ok 1000"


async def test_auto_falls_back_to_the_signal_when_sigusr1_is_disabled(
    node_process: StartNode, tmp_path: Path
) -> None:
    app = node_process(
        LEAKY_APP,
        version="24",
        args=["--disable-sigusr1", "--heapsnapshot-signal=SIGUSR2"],
        env=SMALL,
        cwd=tmp_path,
    )
    out = tmp_path / "auto.heapsnapshot"
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid))
    assert result.target.method == "signal"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # noqa: ASYNC240
    assert app.get("/") == "ok 1000"


def finished_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


async def test_no_such_pid(tmp_path: Path) -> None:
    pid = finished_pid()
    with pytest.raises(ProcessNotFound, match=str(pid)):
        await capture(LocalHost(), FileSink(tmp_path / "x"), selector=ProcessSelector(pid=pid))
    assert nothing_left(tmp_path)


async def test_pid_that_is_not_node(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220
    try:
        with pytest.raises(NotNodeProcess, match=r"not Node\.js"):
            await capture(LocalHost(), FileSink(tmp_path / "x"), selector=ProcessSelector(pid=sleeper.pid))
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("method", ["inspector", "signal"])
async def test_process_exiting_mid_capture(node_process: StartNode, tmp_path: Path, method: str) -> None:
    diag = tmp_path / "diag"
    diag.mkdir()
    app = node_process(
        LEAKY_APP, args=["--inspect-port=0", "--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"]
    )

    async def kill_when_generating(progress: Progress) -> None:
        if progress.phase == "generating":
            app.popen.kill()

    out = tmp_path / "gone.heapsnapshot"
    with pytest.raises(TargetExited, match="exited"):
        await capture(
            LocalHost(),
            FileSink(out),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(method=method),  # type: ignore[arg-type]
            on_progress=kill_when_generating,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diag"]  # noqa: ASYNC240
    assert nothing_left(diag)


async def test_inspector_port_taken(node_process: StartNode, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        app = node_process(LEAKY_APP, args=[f"--inspect-port={port}"], env=SMALL)
        with pytest.raises(InspectorPortTaken, match=f"Port {port}.*--inspect-port=0"):
            await capture(
                LocalHost(),
                FileSink(tmp_path / "x"),
                selector=ProcessSelector(pid=app.pid),
                options=CaptureOptions(method="inspector"),
            )
    assert app.get("/") == "ok 1000"
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("method", ["inspector", "auto"])
async def test_activation_disabled(node_process: StartNode, tmp_path: Path, method: str) -> None:
    app = node_process(LEAKY_APP, version="24", args=["--disable-sigusr1"], env=SMALL)
    with pytest.raises(InspectorDisabled, match="--disable-sigusr1"):
        await capture(
            LocalHost(),
            FileSink(tmp_path / "x"),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(method=method),  # type: ignore[arg-type]
        )
    assert await listening_ports(app.pid) == [app.port]
    assert app.get("/") == "ok 1000"
    assert nothing_left(tmp_path)


async def test_signal_flag_absent(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(LEAKY_APP, env=SMALL)
    with pytest.raises(SignalNotHandled, match="--heapsnapshot-signal=SIGUSR2"):
        await capture(
            LocalHost(),
            FileSink(tmp_path / "x"),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(method="signal"),
        )
    assert app.get("/") == "ok 1000"
    assert nothing_left(tmp_path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run the target as another user")
async def test_unwritable_diagnostic_dir(node_process: StartNode, tmp_path: Path) -> None:
    diag = tmp_path / "diag"
    diag.mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # noqa: ASYNC240
    app = node_process(
        LEAKY_APP,
        args=["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"],
        env=SMALL,
        cwd="/",
        user=65534,
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DiagnosticDirNotWritable, match=f"{diag}.*--diagnostic-dir"):
        await capture(
            LocalHost(),
            FileSink(out / "x"),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(method="signal"),
        )
    assert app.get("/") == "ok 1000"
    assert nothing_left(out)


async def test_not_enough_memory_headroom(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(LEAKY_APP, env=SMALL)
    with pytest.raises(
        PreflightRefused, match=r"needs about \d+ MiB .* only 1 MiB is available.*--force"
    ) as caught:
        await capture(
            LocalHost(),
            FileSink(tmp_path / "x"),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(available_bytes=1 << 20),
        )
    assert "given by the caller" in str(caught.value)
    assert await listening_ports(app.pid) == [app.port]
    assert app.get("/") == "ok 1000"
    assert nothing_left(tmp_path)
