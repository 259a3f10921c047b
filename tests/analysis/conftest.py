"""Fixtures of the analysis tests: real heap snapshots written by small Node.js apps.

Nothing is faked: each Node.js release writes its own snapshots, once per session, into
a temporary directory; they are a few MB each.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"
CACHE = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap"))
NODES = {"20": "node", "24": str(CACHE / "node" / "24.21.0" / "bin" / "node")}
#: How many LeakyThing objects the leaky app plants between baseline and target.
LEAK_COUNT = 1500


@dataclass(frozen=True)
class SnapshotSeries:
    node: str
    baseline: Path
    target: Path
    final: Path
    other_process: Path


def _write_series(node: str, out: Path) -> SnapshotSeries:
    out.mkdir(parents=True)
    subprocess.run([node, str(APPS / "leaky.js"), str(out), str(LEAK_COUNT)], check=True, timeout=120)
    other = out / "other"
    other.mkdir()
    subprocess.run([node, str(APPS / "leaky.js"), str(other), "10"], check=True, timeout=120)
    return SnapshotSeries(
        node=node,
        baseline=out / "baseline.heapsnapshot",
        target=out / "target.heapsnapshot",
        final=out / "final.heapsnapshot",
        other_process=other / "target.heapsnapshot",
    )


@pytest.fixture(scope="session", params=sorted(NODES))
def series(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SnapshotSeries:
    """Baseline, target and final snapshots of one leaky process, per Node.js release."""
    version: str = request.param
    return _write_series(NODES[version], tmp_path_factory.mktemp(f"node{version}") / "series")
