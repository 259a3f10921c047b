"""Every file heapsnap writes is its owner's only (0600): a heap snapshot holds whatever was
in memory, tokens and personal data included."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from heapsnap._private import private_open
from heapsnap.engine._transfers import _WRITE_SNAPSHOT
from tests.engine.test_cli import StartNode, heapsnap
from tests.support.nodeproc import LEAKY_APP, node_binary

pytestmark = pytest.mark.timeout(300)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("version", ["20", "26"])
def test_the_targets_temporary_snapshot_is_created_0600_and_its_umask_put_back(
    tmp_path: Path, version: str
) -> None:
    """What the tempfile transfer evaluates in the target, in a real Node.js of umask 022."""
    path = tmp_path / "t.heapsnapshot"
    script = (
        "process.umask(0o022);"
        f"const written = eval({json.dumps(_WRITE_SNAPSHOT.format(path=json.dumps(str(path))))});"
        "console.log(JSON.stringify({written, umask: process.umask(0o022)}));"
    )
    out = subprocess.run(
        [node_binary(version), "-e", script], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(out.stdout)
    assert seen == {"written": str(path), "umask": 0o022}
    assert mode(path) == 0o600 and path.stat().st_size > 0


def test_private_open_creates_0600_and_tightens_an_existing_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with private_open(tmp_path / "new.bin") as out:
            out.write(b"x")
        existing = tmp_path / "old.txt"
        existing.write_text("public")
        existing.chmod(0o644)
        with private_open(existing, "w", encoding="utf-8") as out:
            out.write("private")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.bin") == 0o600
    assert mode(existing) == 0o600 and existing.read_text() == "private"
    with pytest.raises(ValueError, match="writes only"):
        private_open(existing, "r")


@pytest.mark.parametrize("transfer", ["stream", "tempfile"])
def test_capture_output_is_0600(node_process: StartNode, tmp_path: Path, transfer: str) -> None:
    app = node_process(LEAKY_APP, args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    out = tmp_path / "cli.heapsnapshot"
    old = os.umask(0o022)
    try:
        done = heapsnap("capture", "--pid", str(app.pid), "-o", str(out), "--transfer", transfer)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert mode(out) == 0o600
