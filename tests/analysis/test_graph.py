from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from heapsnap.analysis.graph import dominators
from heapsnap.analysis.reader import read_snapshot
from heapsnap.analysis.views import analyze

from .conftest import APPS, LEAK_COUNT, SnapshotSeries
from .reference import devtools_dominators, load, retained_from


def test_dominators_and_retained_sizes_follow_devtools_rules(series: SnapshotSeries) -> None:
    snapshot = read_snapshot(series.final)
    result = dominators(snapshot)
    expected, sizes = devtools_dominators(load(series.final))
    expected_retained = retained_from(expected, sizes)

    reachable = np.array(sorted(expected), dtype=np.int64)
    assert reachable.size > 0.9 * snapshot.node_count
    want = np.array([expected[n] for n in reachable.tolist()])
    differ = reachable[result.idom[reachable] != want]
    # DevTools re-examines a node only when one of its retainers changed dominator, so it
    # can stop short of the fixpoint for a few V8-internal nodes (reproduced on purpose);
    # every object of the program has its exact dominator and retained size.
    assert differ.size <= 0.001 * reachable.size
    assert snapshot.layout.object_type not in set(snapshot.node_type[differ].tolist())
    objects = reachable[snapshot.node_type[reachable] == snapshot.layout.object_type]
    assert objects.size > 1000
    assert np.array_equal(result.idom[objects], np.array([expected[n] for n in objects.tolist()]))
    got = result.retained[objects].astype(np.int64)
    same = got == np.array([expected_retained[n] for n in objects.tolist()])
    # Objects above one of those few internal nodes differ by its size; the rest match.
    assert np.count_nonzero(~same) <= 0.01 * objects.size
    leaky = objects[snapshot.node_name[objects] == snapshot.strings.index_of("LeakyThing")]
    assert leaky.size == LEAK_COUNT and bool(same[np.isin(objects, leaky)].all())
    assert int(result.retained[snapshot.root]) == int(snapshot.self_size.sum())


def _memlab(memlab_dir: Path, snapshot: Path, ids: list[int]) -> dict[str, dict[str, int]]:
    command = ["node", str(APPS / "memlab_retained.js"), str(memlab_dir), str(snapshot), *map(str, ids)]
    done = subprocess.run(command, check=True, capture_output=True, timeout=300)
    result: dict[str, dict[str, int]] = json.loads(done.stdout)
    return result


def test_retained_sizes_and_dominators_of_the_leaked_objects_equal_memlab(
    series: SnapshotSeries, memlab_dir: Path
) -> None:
    analysis = analyze(read_snapshot(series.final))
    snapshot = analysis.snapshot
    names = np.array([analysis.class_label(int(k)) for k in analysis.class_index], dtype=object)
    leaky = np.flatnonzero(names == "LeakyThing")
    assert leaky.size == LEAK_COUNT
    holder = int(analysis.dominators.idom[leaky[0]])
    # The leaked objects, what each owns, their holder array and the registry object.
    payloads = [
        int(snapshot.edge_to[e])
        for n in leaky[:50].tolist()
        for e in range(int(snapshot.first_edge[n]), int(snapshot.first_edge[n + 1]))
        if snapshot.edge_label(e) == ".payload"
    ]
    # memlab drops some V8-internal edges that DevTools keeps, so containers that also hold
    # V8 internals (the holder array's map...) differ by those; the leaked objects do not.
    chosen = [*leaky[:200].tolist(), *payloads]
    ids = [int(snapshot.node_id[n]) for n in chosen]

    theirs = _memlab(memlab_dir, series.final, ids)

    assert len(payloads) == 50
    assert snapshot.class_of(holder) == "Array"
    for node, node_id in zip(chosen, ids, strict=True):
        mine = {
            "retained": int(analysis.dominators.retained[node]),
            "dominator": int(snapshot.node_id[analysis.dominators.idom[node]]),
        }
        assert mine == theirs[str(node_id)], f"{snapshot.class_of(node)} @{node_id}"
