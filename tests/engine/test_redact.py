"""Redacted captures of real Node.js processes (``--redact``, ``CaptureOptions.redact``) and
``heapsnap redact`` of files already taken: a random secret planted in the target's heap
is never in what is stored, and what is stored still reads as the same heap."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heapsnap.analysis.reader import read_snapshot
from heapsnap.analysis.views import analyze
from heapsnap.engine import CaptureOptions, ProcessSelector, capture, capture_series
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.support.nodeproc import SECRET_APP, NodeProcess
from tests.support.s3server import S3Server

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]


def holding_a_secret(node_process: StartNode, version: str = "20", args: list[str] | None = None) -> Any:
    secret = "pw_" + secrets.token_hex(16)
    # Port 0: another test's target may hold 9229.
    args = ["--inspect-port=0", *(args or [])]
    app = node_process(SECRET_APP, version=version, args=args, env={"SECRET": secret})
    return app, secret.encode()


def stored(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def holders(path: Path) -> int:
    rows = {row.name: row for row in analyze(read_snapshot(path)).summary()}
    return rows["SecretHolder"].count


def heapsnap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heapsnap.cli", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("version", "method", "transfer"),
    [
        ("20", "inspector", "stream"),
        ("20", "inspector", "tempfile"),
        ("24", "signal", "auto"),
        ("26", "inspector", "stream"),
    ],
)
async def test_a_redacted_capture_never_stores_the_secret(
    node_process: StartNode, tmp_path: Path, version: str, method: str, transfer: str
) -> None:
    diag = tmp_path / "diag"
    diag.mkdir()
    args = ["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"] if method == "signal" else []
    app, secret = holding_a_secret(node_process, version, args)
    out = tmp_path / "redacted.heapsnapshot"
    options = CaptureOptions(method=method, transfer=transfer, redact=True)  # type: ignore[arg-type]
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid), options=options)
    assert result.redacted and result.target.method == method
    data = stored(out)
    assert secret not in data and secret[:12] not in data
    assert b"SecretHolder" in data
    assert holders(out) == 5000
    # The capture's own summary was computed from the redacted bytes, and agrees.
    assert result.summary is not None
    counts = {stat.name: stat.count for stat in result.summary.top_by_count}
    assert counts.get("SecretHolder") == 5000
    assert result.artifact.size_bytes == len(data)
    assert not any(diag.iterdir())


async def test_a_plain_capture_does_store_it(node_process: StartNode, tmp_path: Path) -> None:
    # The other tests' proof is worth something only if a capture without --redact holds it.
    app, secret = holding_a_secret(node_process)
    out = tmp_path / "plain.heapsnapshot"
    result = await capture(LocalHost(), FileSink(out), selector=ProcessSelector(pid=app.pid))
    assert not result.redacted
    assert stored(out).count(secret) >= 5000


async def test_every_snapshot_of_a_redacted_series_is_redacted(
    node_process: StartNode, tmp_path: Path
) -> None:
    app, secret = holding_a_secret(node_process, "24")
    paths = [tmp_path / f"s{i}.heapsnapshot" for i in range(2)]
    results = await capture_series(
        LocalHost(),
        lambda i: FileSink(paths[i]),
        count=2,
        interval_seconds=0.1,
        selector=ProcessSelector(pid=app.pid),
        options=CaptureOptions(redact=True),
    )
    assert [r.redacted for r in results] == [True, True]
    for path in paths:
        assert secret not in stored(path) and holders(path) == 5000


def test_cli_capture_redact(node_process: StartNode, tmp_path: Path) -> None:
    app, secret = holding_a_secret(node_process)
    out = tmp_path / "cli.heapsnapshot.gz"
    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out), "--gzip", "--redact", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["redacted"] is True
    assert secret not in stored(out) and holders(out) == 5000
    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out), "--redact")
    assert done.returncode == 0, done.stderr
    assert "(redacted: string contents replaced)" in done.stdout


def test_heapsnap_redact_a_file_taken_before(node_process: StartNode, tmp_path: Path) -> None:
    app, secret = holding_a_secret(node_process, "26")
    plain = tmp_path / "plain.heapsnapshot.gz"
    done = heapsnap("capture", "--pid", str(app.pid), "-o", str(plain), "--gzip")
    assert done.returncode == 0, done.stderr
    assert secret in stored(plain)
    out = tmp_path / "shared.heapsnapshot"
    done = heapsnap("redact", str(plain), str(out), "--json")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["uri"] == str(out) and reply["stringsRedacted"] >= 5000
    assert secret not in out.read_bytes()
    plain_rows = analyze(read_snapshot(plain)).summary()
    assert analyze(read_snapshot(out)).summary() == plain_rows  # the same heap, to the byte count


@pytest.fixture(scope="module")
def real_snapshot(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("real") / "node.heapsnapshot"
    program = f"require('v8').writeHeapSnapshot({json.dumps(str(path))})"
    subprocess.run(["node", "-e", program], check=True, timeout=60)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda data: data[: len(data) // 2], "ends early"),
        (lambda data: data[: data.index(b'"strings"') + 40], "ends early"),
        (lambda data: b"hello", "not a V8 heap snapshot"),
    ],
)
def test_heapsnap_redact_bad_input_leaves_nothing(
    tmp_path: Path, real_snapshot: bytes, cut: Any, words: str
) -> None:
    source = tmp_path / "bad.heapsnapshot"
    source.write_bytes(cut(real_snapshot))
    out = tmp_path / "out.heapsnapshot"
    done = heapsnap("redact", str(source), str(out))
    assert done.returncode != 0
    assert words in done.stderr and "nothing was written" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["missing.heapsnapshot", "out.heapsnapshot"], "IN 'missing.heapsnapshot' is not a file"),
        (["same.heapsnapshot", "same.heapsnapshot"], "is IN: write the redacted copy to another path"),
        (["same.heapsnapshot", "s3://bucket/"], "names no key"),
        (["same.heapsnapshot", "out.heapsnapshot", "--sse", "AES256"], "--sse encrypts in S3"),
    ],
)
def test_heapsnap_redact_refuses_bad_arguments(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "same.heapsnapshot").write_bytes(b"{}")
    done = subprocess.run(
        [sys.executable, "-m", "heapsnap.cli", "redact", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode != 0 and words in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.heapsnapshot"]


@pytest.mark.s3
def test_heapsnap_redact_from_and_to_s3(node_process: StartNode, tmp_path: Path, s3_server: S3Server) -> None:
    app, secret = holding_a_secret(node_process)
    bucket = s3_server.create_bucket()
    env = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    endpoint = ["--s3-endpoint", s3_server.endpoint, "--s3-path-style", "--s3-region", "us-east-1"]
    done = heapsnap(
        "capture", "--pid", str(app.pid), "--s3", f"s3://{bucket}/plain.heapsnapshot.gz", "--gzip", *endpoint,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = heapsnap(
        "redact", f"s3://{bucket}/plain.heapsnapshot.gz", f"s3://{bucket}/shared.heapsnapshot.gz", *endpoint,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    client = s3_server.client()
    body = gzip.decompress(client.get_object(Bucket=bucket, Key="shared.heapsnapshot.gz")["Body"].read())
    assert secret not in body and b"SecretHolder" in body
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
