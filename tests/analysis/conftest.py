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

from tests.support.nodeproc import node_binary

APPS = Path(__file__).parent / "apps"
CACHE = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap"))
#: The Node.js releases whose snapshots every analysis is checked on.
VERSIONS = ("20", "24", "26")
#: How many LeakyThing objects the leaky app plants between baseline and target.
LEAK_COUNT = 1500


@dataclass(frozen=True)
class SnapshotSeries:
    node: str
    baseline: Path
    target: Path
    final: Path


def _write_series(node: str, out: Path) -> SnapshotSeries:
    out.mkdir(parents=True)
    subprocess.run(
        [node, str(APPS / "leaky.js"), str(out), str(LEAK_COUNT)],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    return SnapshotSeries(
        node=node,
        baseline=out / "baseline.heapsnapshot",
        target=out / "target.heapsnapshot",
        final=out / "final.heapsnapshot",
    )


_written: dict[str, SnapshotSeries] = {}


def _series(version: str, factory: pytest.TempPathFactory) -> SnapshotSeries:
    if version not in _written:
        _written[version] = _write_series(node_binary(version), factory.mktemp(f"node{version}") / "series")
    return _written[version]


@pytest.fixture(scope="session", params=VERSIONS)
def series(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SnapshotSeries:
    """Baseline, target and final snapshots of one leaky process, per Node.js release."""
    return _series(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def series20(tmp_path_factory: pytest.TempPathFactory) -> SnapshotSeries:
    """The Node 20 series, for tests that pair it with other Node 20 snapshots."""
    return _series("20", tmp_path_factory)


MEMLAB_VERSION = "2.0.5"


@pytest.fixture(scope="session")
def memlab_dir() -> Path:
    """memlab from npm, installed by dev/setup.d/40-analysis-tools.sh."""
    path = CACHE / "memlab" / MEMLAB_VERSION
    if not (path / "node_modules" / "@memlab" / "heap-analysis").is_dir():
        pytest.fail(f"memlab is not installed in {path}: run bash dev/setup.sh")
    return path


@pytest.fixture(scope="session")
def other_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of a different program (another script) on Node 20."""
    out = tmp_path_factory.mktemp("other")
    subprocess.run(["node", str(APPS / "other.js"), str(out / "other.heapsnapshot")], check=True, timeout=120)
    return out / "other.heapsnapshot"


@pytest.fixture(scope="session")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The target snapshot of a second run of the leaky app with 10 leaked objects (Node 20)."""
    out = tmp_path_factory.mktemp("rerun")
    subprocess.run(
        ["node", str(APPS / "leaky.js"), str(out), "10"], check=True, timeout=120, stdout=subprocess.DEVNULL
    )
    return out / "target.heapsnapshot"
