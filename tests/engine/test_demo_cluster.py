"""``heapsnap demo --cluster`` as a user runs it: the operator on the local control plane."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def demo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heapsnap.cli", "demo", "--cluster", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=240,
    )


def _running(pattern: str) -> list[str]:
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in found.splitlines() if pattern in line]


def test_demo_cluster_without_binaries_says_to_run_setup(tmp_path: Path) -> None:
    done = demo(cwd=tmp_path, env={"HEAPSNAP_CACHE": str(tmp_path / "empty-cache")})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("heapsnap: error:")]
    assert len(errors) == 1 and "run `bash dev/setup.sh`" in errors[0], done.stderr
    assert "the local control plane is not built" in errors[0]


@pytest.mark.cluster
def test_demo_cluster_captures_through_the_operator_and_cleans_up(tmp_path: Path) -> None:
    done = demo("--requests", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    workdir = re.search(r"kubeconfig (\S+)/admin.kubeconfig", done.stdout).group(1)  # type: ignore[union-attr]
    assert re.search(r"leaky-app-demo\s+leaky-app\s+Succeeded\s+\d+", done.stdout)
    assert re.search(
        r"artifact\s+s3://heapsnap-demo/heapsnap-demo/leaky-app-demo-\S+\.heapsnapshot", done.stdout
    )
    assert re.search(r"LeakyThing\s+[\d,]+", done.stdout.split("5. The resource's status", 1)[1])
    assert not Path(workdir).exists()
    assert _running(workdir) == []
