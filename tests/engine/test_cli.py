"""``heapsnap capture`` and ``heapsnap demo`` as a user runs them."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heapsnap.cli.capture import series_name
from tests.engine.conftest import listening_ports, load_snapshot, node_count, read_until
from tests.support.nodeproc import LEAKY_APP, NodeProcess
from tests.support.s3server import S3Server

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]


def heapsnap(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heapsnap.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=240
    )


def test_capture_to_a_file_prints_the_artifact_and_the_summary(
    node_process: StartNode, tmp_path: Path
) -> None:
    app = node_process(LEAKY_APP, args=["--inspect-port=0"])
    out = tmp_path / "cli.heapsnapshot"
    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out), "--json", "--transfer", "stream")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["artifact"]["uri"] == str(out)
    assert result["target"]["pid"] == app.pid and result["target"]["method"] == "inspector"
    assert result["target"]["transfer"] == "stream"
    assert node_count(load_snapshot(out)) > 0

    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"pid {app.pid}, node v20." in done.stdout and "by inspector (tempfile)" in done.stdout


async def test_capture_through_an_inspector_address(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(LEAKY_APP, version="24", args=["--inspect=127.0.0.1:0"], env={"LEAKY_COUNT": "1000"})
    (inspector,) = set(await listening_ports(app.pid)) - {app.port}
    out = tmp_path / "remote.heapsnapshot.gz"
    done = heapsnap("capture", "--inspect", f"127.0.0.1:{inspector}", "-o", str(out), "--gzip", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["target"]["pid"] == app.pid and not result["target"]["inspector_opened"]
    assert node_count(load_snapshot(out)) > 0
    assert inspector in await listening_ports(app.pid)


def test_capture_error_is_one_line_and_non_zero(tmp_path: Path) -> None:
    done = heapsnap("capture", "--pid", "999999999", "-o", str(tmp_path / "x"))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("heapsnap: error:")]
    assert errors == ["heapsnap: error: No process with pid 999999999 on this machine: check the pid."]
    assert not any(tmp_path.iterdir())


@pytest.mark.s3
@pytest.mark.parametrize("s3_server", ["versitygw"], indirect=True)  # any server: the client is tested
@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGTERM, 1), (signal.SIGHUP, 1), (signal.SIGINT, 1), (signal.SIGINT, 2)],
    ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGINT-twice"],
)
async def test_a_stop_signal_mid_capture_leaves_nothing_behind(
    s3_server: S3Server, node_process: StartNode, signum: signal.Signals, times: int
) -> None:
    """``timeout``, ``kill``, systemd, a closed terminal, Ctrl-C: the upload is aborted and
    the inspector heapsnap opened is closed before heapsnap exits. A second signal stops
    waiting for the target, still without a traceback or an upload left behind."""
    bucket = s3_server.create_bucket()
    # ~1 s of snapshot generation: the signal lands while V8 writes.
    app = node_process(LEAKY_APP, env={"LEAKY_COUNT": "600000"})
    stray_before = set(glob.glob("/tmp/.heapsnap-*"))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "heapsnap.cli", "capture", "--pid", str(app.pid), "--s3", f"s3://{bucket}/x",
        "--s3-endpoint", s3_server.endpoint, "--s3-path-style", "--s3-region", "us-east-1",
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert child.stderr is not None
    said = ""
    for expected in ["heapsnap: generating", "cleaning up first"][:times]:
        said = await read_until(child.stderr, expected, said)
        child.send_signal(signum)
    said += (await child.stderr.read()).decode()
    code = await asyncio.wait_for(child.wait(), 120)
    assert code == 128 + signum, said
    assert said.endswith(f"heapsnap: stopped by {signum.name}\n") and "Traceback" not in said
    assert uploads(s3_server, bucket) == []
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)
    assert app.alive()
    if times == 1:
        assert await listening_ports(app.pid) == [app.port], "the inspector heapsnap opened is still open"
    assert set(glob.glob("/tmp/.heapsnap-*")) == stray_before


async def test_stopped_while_a_busy_target_has_not_yet_written_its_signal_snapshot(
    node_process: StartNode, tmp_path: Path
) -> None:
    """A target busy in JavaScript writes the snapshot the signal asked for only when it is
    done: stopped before that, heapsnap waits to unlink the file rather than leave it."""
    diagnostics = tmp_path / "diagnostics"
    diagnostics.mkdir()
    args = ["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diagnostics}"]
    app = node_process(LEAKY_APP, args=args, env={"BUSY_MS": "4000"})
    busy = asyncio.ensure_future(asyncio.to_thread(app.get, "/busy"))
    await asyncio.sleep(0.3)  # the target is in its busy loop
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "heapsnap.cli", "capture", "--pid", str(app.pid), "--method", "signal",
        "-o", str(tmp_path / "never.heapsnapshot"), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    said = await read_until(child.stderr, "heapsnap: signalling")
    await asyncio.sleep(0.5)  # the agent has sent the signal; the target has not seen it yet
    child.send_signal(signal.SIGINT)
    said += (await child.stderr.read()).decode()
    assert await asyncio.wait_for(child.wait(), 60) == 130, said
    await busy
    assert app.get("/") == "ok 100000"  # done with the snapshot, and alive
    assert list(diagnostics.iterdir()) == []
    assert list(tmp_path.glob("never.heapsnapshot*")) == []  # noqa: ASYNC240


def test_sigterm_runs_the_clean_up_of_a_synchronous_command(tmp_path: Path) -> None:
    """``kubectl heapsnap get`` and the analysis commands do not run on asyncio: there,
    SIGTERM raises as Ctrl-C does, so a partial file is removed rather than left."""
    partial = tmp_path / "download.part"
    program = f"""
import pathlib, time
from heapsnap.cli import exit_after
def command():
    partial = pathlib.Path({str(partial)!r})
    try:
        partial.write_text("half"); print("writing", flush=True); time.sleep(60)
    finally:
        partial.unlink()
    return 0
exit_after(command)
"""
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "writing\n"
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=30)
    assert not partial.exists()


def uploads(server: S3Server, bucket: str) -> list[object]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_demo_finds_the_leak_with_its_retainer_path(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = heapsnap("demo", "--requests", "10", "--interval", "0.5", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    suspects = done.stdout.split("4. What leaks", 1)[1].split("5. What grew", 1)[0]
    rows = [line.split() for line in suspects.splitlines() if line.strip().startswith("LeakyThing ")]
    assert rows and int(rows[0][1].replace(",", "")) > 0
    path = suspects.split("Retainer path of LeakyThing @", 1)[1]
    assert re.search(r"->cache Array @\d+\n\s+\[\d+\] LeakyThing @\d+", path)
    assert "held by the variable 'cache' (Array)" in suspects
    assert re.search(r"LeakyThing\s+[\d,]+\s+0\s+\+[\d,]+", done.stdout.split("5. What grew", 1)[1])
    # The allocation sampling names the request handler that fills the cache (line 20).
    sampled = done.stdout.split("6. Which code allocates", 1)[1].split("7. Write", 1)[0]
    assert re.search(
        r"=> what stays alive is allocated in \(anonymous\) \(\S+/leaky-app/server\.js:20:\d+\)", sampled
    )
    assert f"HTML report: {out / 'leaks.html'}" in done.stdout
    assert "LeakyThing" in (out / "leaks.html").read_text()
    snapshots = sorted(out.glob("*.heapsnapshot"))
    assert [p.name.split("-", 4)[-1] for p in snapshots] == [
        "1-baseline.heapsnapshot",
        "2-target.heapsnapshot",
        "3-final.heapsnapshot",
    ]
    pid = int(re.search(r"as pid (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    assert (
        not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    )


def test_capture_series_keeps_ids_comparable(node_process: StartNode, tmp_path: Path) -> None:
    app = node_process(LEAKY_APP, env={"LEAKY_COUNT": "1000"})
    out = tmp_path / "series.heapsnapshot"
    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out), "--series", "3", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    files = [tmp_path / f"series-{n}.heapsnapshot" for n in (1, 2, 3)]
    assert sorted(tmp_path.iterdir()) == files
    for number, path in enumerate(files, 1):
        assert f"series {number}/3" in done.stdout and f"snapshot   {path}" in done.stdout
    diff = heapsnap("diff", str(files[0]), str(files[2]), "--json")
    assert diff.returncode == 0, diff.stderr
    assert json.loads(diff.stdout)["method"] == "ids"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--series", "1", "--interval", "1"], "--series is 1: a series needs at least 2 snapshots"),
        (["--series", "3"], "--series needs --interval SECONDS"),
        (["--interval", "1"], "--interval needs --series N"),
        (["--sample-allocations"], "--sample-allocations needs --series N"),
        (["--series", "3", "--interval", "1", "--method", "signal"], "object ids are not comparable"),
    ],
)
def test_capture_series_bad_input_is_refused(tmp_path: Path, extra: list[str], message: str) -> None:
    done = heapsnap("capture", "--pid", "1", "-o", str(tmp_path / "x.heapsnapshot"), *extra)
    assert done.returncode == 1
    assert message in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--s3", "s3://b/k", "--sse", "AES256", "--sse-kms-key-id", "alias/k"], "it needs --sse aws:kms"),
        (["-o", "x.heapsnapshot", "--sse", "AES256"], "they need --s3 s3://bucket/prefix"),
        (["-o", "x.heapsnapshot", "--sse-kms-key-id", "alias/k"], "they need --s3 s3://bucket/prefix"),
    ],
)
def test_capture_storage_bad_input_is_refused(tmp_path: Path, extra: list[str], message: str) -> None:
    done = heapsnap("capture", "--pid", "1", *extra, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "number", "numbered"),
    [
        ("api.heapsnapshot", 1, "api-1.heapsnapshot"),
        ("prod/api.heapsnapshot.gz", 2, "prod/api-2.heapsnapshot.gz"),
        ("dir.d/snap", 3, "dir.d/snap-3"),
    ],
)
def test_series_numbers_go_before_the_suffixes(name: str, number: int, numbered: str) -> None:
    assert series_name(name, number) == numbered


def test_the_capture_command_starts_without_what_it_preloads_while_probing() -> None:
    # numpy, websockets and botocore's client take ~0.3 s to import: the CLI imports them
    # on a thread while the main thread probes the target, which only works if nothing on
    # the way to the probe imports them first.
    code = (
        "import sys; import heapsnap.cli; heapsnap.cli.build_parser(); "
        "print(sorted(m for m in ('numpy', 'websockets', 'botocore.session') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
