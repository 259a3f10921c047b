"""The leak heuristics on a real Node.js process with each problem planted (apps/planted.js)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from heapsnap.analysis import heuristics
from heapsnap.analysis._node_globals import BASELINES
from heapsnap.analysis.reader import read_snapshot
from heapsnap.cli import main
from heapsnap.errors import InvalidInput
from tests.support.nodeproc import NODE_VERSIONS, node_binary

from .conftest import APPS, VERSIONS
from .test_cli import _chromium

DUP_COUNT = 400
FAN_OUT = 5000
PLANTED = {"myLeakyCache", "steadyMap", "onceMap", "growingQueue", "objectCache", "dupStrings", "fanOut"}

_written: dict[str, list[Path]] = {}


@pytest.fixture(scope="module", params=VERSIONS)
def planted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three snapshots of one planted process, per Node.js release."""
    version = request.param
    if version not in _written:
        out = tmp_path_factory.mktemp(f"planted{version}")
        subprocess.run(
            [node_binary(version), str(APPS / "planted.js"), str(out), str(DUP_COUNT), str(FAN_OUT)],
            check=True,
            timeout=120,
        )
        _written[version] = [out / f"s{i}.heapsnapshot" for i in (1, 2, 3)]
    return _written[version]


@pytest.fixture(scope="module")
def inspection(planted: list[Path]) -> heuristics.Inspection:
    result, _ = heuristics.inspect([str(p) for p in planted], read_snapshot, top=25)
    return result


def test_the_duplicated_string_tops_by_wasted_bytes(inspection: heuristics.Inspection) -> None:
    top = inspection.strings[0]
    assert top.value == "duplicated-string-" + "x" * 46
    assert top.count == DUP_COUNT
    assert top.size >= 16 + 64
    assert top.wasted == (DUP_COUNT - 1) * top.size
    assert all(s.count > 1 for s in inspection.strings)
    assert inspection.strings_wasted > sum(s.wasted for s in inspection.strings[:1])
    assert inspection.strings_wasted >= sum(s.wasted for s in inspection.strings)
    assert [s.wasted for s in inspection.strings] == sorted(
        (s.wasted for s in inspection.strings), reverse=True
    )


def test_growing_collections_are_exactly_the_planted_ones(inspection: heuristics.Inspection) -> None:
    assert inspection.growing is not None
    by_path = {g.path[-1].edge[1:]: g for g in inspection.growing}
    cache = inspection.growing[0]
    assert (cache.kind, cache.counts, cache.path[-1].edge) == ("Map", [100, 200, 300], ".myLeakyCache")
    assert cache.path[-1].class_name == "Map" and cache.held_by == "global.myLeakyCache"
    assert by_path["growingQueue"].kind == "Array" and by_path["growingQueue"].counts == [10, 20, 30]
    assert by_path["objectCache"].kind == "Object" and by_path["objectCache"].counts == [5, 10, 15]
    # The Map whose values are replaced, and the one that grew once only, are not growing.
    listed = {g.path[-1].edge for g in inspection.growing}
    assert ".steadyMap" not in listed and ".onceMap" not in listed
    assert listed & {f".{name}" for name in PLANTED} == {".myLeakyCache", ".growingQueue", ".objectCache"}


def test_the_planted_fan_out_object_tops(inspection: heuristics.Inspection) -> None:
    top = inspection.fan_out[0]
    assert (top.class_name, top.references) == ("FanOutHolder", FAN_OUT)
    assert top.retained_size > FAN_OUT * 16
    cache = next(f for f in inspection.fan_out if f.class_name == "Map" and f.references == 600)
    assert cache  # the 300-entry Map: 300 keys and 300 values


def test_app_globals_are_exactly_the_planted_ones(inspection: heuristics.Inspection) -> None:
    report = inspection.globals
    assert report.node_version.startswith("v")
    assert report.baseline == f"Node {report.node_version[1:].split('.')[0]}"
    assert {g.name for g in report.globals} == PLANTED
    cache = next(g for g in report.globals if g.name == "myLeakyCache")
    assert cache.class_name == "Map" and cache.retained_size > 300 * 16
    assert report.globals[0].name == "fanOut"


def test_one_snapshot_has_no_growth(planted: list[Path]) -> None:
    result, _ = heuristics.inspect([str(planted[-1])], read_snapshot)
    assert result.growing is None
    with pytest.raises(InvalidInput, match="give 2 or more snapshots"):
        heuristics.growing_collections(
            [heuristics.collection_sizes(read_snapshot(planted[0]))], read_snapshot(planted[0]), None
        )


def test_snapshots_of_two_runs_are_refused_as_a_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        subprocess.run(
            ["node", str(APPS / "planted.js"), str(out), str(DUP_COUNT), str(FAN_OUT)],
            check=True,
            timeout=120,
        )
        runs.append(out)
    mixed = [
        str(runs[0] / "s1.heapsnapshot"),
        str(runs[1] / "s2.heapsnapshot"),
        str(runs[1] / "s3.heapsnapshot"),
    ]
    assert main(["inspect", *mixed]) == 1
    err = capsys.readouterr().err
    assert "are not comparable" in err and "a/s1.heapsnapshot" in err and "b/s2.heapsnapshot" in err
    # The same process's snapshots pass the same check.
    result, _ = heuristics.inspect([str(runs[1] / f"s{i}.heapsnapshot") for i in (1, 2, 3)], read_snapshot)
    assert result.growing and result.growing[0].counts == [100, 200, 300]


def test_an_eval_worker_adds_no_globals_of_its_own(tmp_path: Path) -> None:
    """Node gives eval'd code require, module... as globals: they are not the program's."""
    out = tmp_path / "worker.heapsnapshot"
    script = (
        "const { Worker } = require('worker_threads');"
        "new Worker(`globalThis.workerCache = new Map(); require('v8').writeHeapSnapshot("
        "require('worker_threads').workerData)`, { eval: true, workerData: process.argv[1] });"
    )
    subprocess.run(["node", "-e", script, str(out)], check=True, timeout=120)
    report = heuristics.app_globals(read_snapshot(out))
    assert [g.name for g in report.globals] == ["workerCache"]


@pytest.mark.parametrize("version", list(NODE_VERSIONS))
def test_the_shipped_baseline_is_a_fresh_process_globals(version: str) -> None:
    found, names = heuristics.fresh_node_globals(node_binary(version))
    major = int(found[1:].split(".")[0])
    assert str(major) == version
    assert names == set(BASELINES[major]), "run .venv/bin/python dev/node-globals.py"


def test_cli_table_json_and_html(
    planted: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(p) for p in planted]
    report = tmp_path / "inspect.html"
    assert main(["inspect", *files, "--json", "--top", "5"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["growingCollections"][0]["heldBy"].endswith(".myLeakyCache")
    assert payload["growingCollections"][0]["counts"] == [100, 200, 300]
    assert payload["fanOut"][0]["references"] == FAN_OUT
    assert payload["duplicatedStrings"][0]["count"] == DUP_COUNT
    assert main(["inspect", *files, "--html", str(report)]) == 0
    out = capsys.readouterr().out
    assert "100 → 200 → 300" in out and "myLeakyCache" in out
    dom = _chromium("--dump-dom", report.as_uri())
    for anchor in ("strings", "growing", "fanout", "globals"):
        assert f'id="{anchor}"' in dom
    assert "FanOutHolder" in dom and "myLeakyCache" in dom
    assert [p.name for p in tmp_path.iterdir()] == ["inspect.html"]


def test_bad_input_is_one_clear_line(
    planted: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, message in (
        (["inspect", str(tmp_path / "missing.heapsnapshot")], "does not exist: give the path"),
        (["inspect", str(planted[0]), "--top", "0"], "--top must be at least 1"),
        (["inspect", str(planted[0]), "--html", str(tmp_path / "no" / "r.html")], "does not exist"),
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
