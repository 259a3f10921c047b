from __future__ import annotations

import gzip
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from heapsnap.cli import main

from .conftest import LEAK_COUNT, SnapshotSeries

CHROMIUM = "/usr/bin/chromium"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_summary_json_and_table(series: SnapshotSeries, capsys: pytest.CaptureFixture[str]) -> None:
    payload = run_json(capsys, "summary", str(series.final), "--top", "1000")
    classes = {c["name"]: c for c in payload["classes"]}
    assert classes["LeakyThing"]["count"] == LEAK_COUNT
    assert classes["LeakyThing"]["retainedSize"] > classes["LeakyThing"]["shallowSize"]

    code, out, _ = run(capsys, "summary", str(series.final), "--top", "5")
    assert code == 0
    assert "Retained size" in out.splitlines()[2]
    assert len(out.splitlines()) == 4 + 5


def test_fast_summary_streams(series: SnapshotSeries, capsys: pytest.CaptureFixture[str]) -> None:
    payload = run_json(capsys, "summary", "--fast", str(series.target), "--top", "1000")
    assert {c["name"]: c["count"] for c in payload["topByCount"]}["LeakyThing"] == LEAK_COUNT


def test_diff_and_retainers(series: SnapshotSeries, capsys: pytest.CaptureFixture[str]) -> None:
    diff = run_json(capsys, "diff", str(series.baseline), str(series.target), "--top", "1000")
    assert diff["method"] == "ids"
    assert {c["name"]: c["newCount"] for c in diff["classes"]}["LeakyThing"] == LEAK_COUNT

    leaks = run_json(capsys, "leaks", str(series.baseline), str(series.target), str(series.final))
    example = leaks["suspects"][0]["representativeId"]
    held = run_json(capsys, "retainers", str(series.final), "--node", f"@{example}")
    assert held["className"] == "LeakyThing"
    assert held["retainers"][0]["className"] == "Array"
    assert [s["edge"] for s in held["retainerPath"]][-3:-1] == [".leakRegistry", ".items"]


def _chromium(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="heapsnap-chromium-") as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    return done.stdout


def test_html_leak_report_renders_in_chromium(
    series: SnapshotSeries, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "leaks.html"
    code, _, err = run(
        capsys, "leaks", str(series.baseline), str(series.target), str(series.final), "--html", str(report)
    )
    assert code == 0, err
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["leaks.html"]

    dom = _chromium("--dump-dom", report.as_uri())
    assert dom.count("<svg") >= 3
    assert "LeakyThing" in dom and ".leakRegistry" in dom and ".items" in dom
    assert f"{LEAK_COUNT:,}" in dom

    shot = tmp_path / "leaks.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,1400", report.as_uri())
    assert shot.stat().st_size > 20_000


def test_html_summary_and_diff(
    series: SnapshotSeries, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, needle in (
        (["summary", str(series.final)], "Top constructors by retained size"),
        (["diff", str(series.baseline), str(series.final)], "Growth between the snapshots"),
    ):
        report = tmp_path / f"{argv[0]}.html"
        code, _, err = run(capsys, *argv, "--html", str(report))
        assert code == 0, err
        dom = _chromium("--dump-dom", report.as_uri())
        assert needle in dom and "LeakyThing" in dom and "<svg" in dom


def test_bad_input_is_one_clear_line(
    series: SnapshotSeries, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "cut.heapsnapshot"
    truncated.write_bytes(series.final.read_bytes()[:100_000])
    cases = [
        (["summary", str(tmp_path / "missing.heapsnapshot")], "does not exist"),
        (["summary", str(truncated)], "truncated"),
        (["summary", "--fast", str(truncated)], "truncated"),
        (["retainers", str(series.final), "--node", "abc"], "--node must be an object id"),
        (["retainers", str(series.final), "--node", "4294967295"], "no object with id @4294967295"),
        (["summary", str(series.final), "--top", "0"], "--top must be at least 1"),
        (["summary", str(series.final), "--html", str(tmp_path / "no" / "r.html")], "does not exist"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert out == ""
        assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.heapsnapshot"]


@pytest.mark.s3
def test_summary_of_a_gzip_object_in_s3(
    series: SnapshotSeries,
    s3_server: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3_server.create_bucket()
    s3_server.client().put_object(
        Bucket=bucket,
        Key="snaps/final.heapsnapshot.gz",
        Body=gzip.compress(series.final.read_bytes(), compresslevel=1),
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = ["--s3-endpoint", s3_server.endpoint, "--s3-path-style"]

    payload = run_json(
        capsys, "summary", f"s3://{bucket}/snaps/final.heapsnapshot.gz", *endpoint, "--top", "1000"
    )
    assert {c["name"]: c["count"] for c in payload["classes"]}["LeakyThing"] == LEAK_COUNT

    code, _, err = run(capsys, "summary", f"s3://{bucket}/snaps/missing", *endpoint)
    assert code == 1 and "does not exist" in err
