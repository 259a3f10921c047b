from __future__ import annotations

from pathlib import Path

import pytest

from heapsnap.analysis.reader import read_snapshot
from heapsnap.analysis.views import analyze, compare, find_leaks, retainers
from heapsnap.errors import InvalidInput

from .conftest import LEAK_COUNT, SnapshotSeries


def test_summary_ranks_the_leaking_class_with_its_retained_size(series: SnapshotSeries) -> None:
    analysis = analyze(read_snapshot(series.final))
    rows = {row.name: row for row in analysis.summary()}
    leaky = rows["LeakyThing"]
    assert leaky.count == LEAK_COUNT
    assert leaky.shallow_size == sum(
        int(analysis.snapshot.self_size[n])
        for n in range(analysis.snapshot.node_count)
        if analysis.snapshot.class_of(n) == "LeakyThing"
    )
    # Each LeakyThing owns its payload array and that array's elements.
    assert leaky.retained_size > 2 * leaky.shallow_size
    user_classes = [r.name for r in analysis.summary() if r.name in ("LeakyThing", "TransientThing")]
    assert user_classes == ["LeakyThing", "TransientThing"][: len(user_classes)]


def test_comparison_by_id_counts_what_the_leak_adds(series: SnapshotSeries) -> None:
    base, target, final = (read_snapshot(p) for p in (series.baseline, series.target, series.final))

    grown = compare(base, target)
    assert grown.method == "ids"
    by_name = {c.name: c for c in grown.classes}
    assert by_name["LeakyThing"].new_count == LEAK_COUNT
    assert by_name["LeakyThing"].deleted_count == 0
    assert by_name["TransientThing"].new_count == LEAK_COUNT

    freed = {c.name: c for c in compare(target, final).classes}
    assert "LeakyThing" not in freed
    assert freed["TransientThing"].deleted_count >= LEAK_COUNT - 5
    assert freed["TransientThing"].size_delta < 0


def test_snapshots_whose_ids_restarted_are_compared_by_counts(
    series20: SnapshotSeries, second_run: Path
) -> None:
    comparison = compare(read_snapshot(second_run), read_snapshot(series20.target))
    assert comparison.method == "counts"
    assert "not comparable" in comparison.reason
    by_name = {c.name: c for c in comparison.classes}
    assert by_name["LeakyThing"].count_delta == LEAK_COUNT - 10


def test_snapshots_of_different_programs_are_refused(series: SnapshotSeries, other_program: Path) -> None:
    other = read_snapshot(other_program)
    message = "different processes" if series.node == "node" else "different V8 versions"
    with pytest.raises(InvalidInput, match=message):
        compare(read_snapshot(series.target), other)


def test_leaks_are_exactly_the_planted_objects_with_their_holder(series: SnapshotSeries) -> None:
    base, target = read_snapshot(series.baseline), read_snapshot(series.target)
    final = analyze(read_snapshot(series.final))

    report = find_leaks(base, target, final)

    program = [s for s in report.suspects if not s.name.startswith("(")]
    assert [s.name for s in program] == ["LeakyThing"]
    leaky = program[0]
    assert leaky.count == LEAK_COUNT
    assert report.suspects[0] is leaky
    assert [step.edge for step in leaky.path][-3:-1] == [".leakRegistry", ".items"]
    assert leaky.path[0].class_name == "(root)"
    assert leaky.path[-1].node_id == leaky.representative_id


def test_leaks_need_comparable_ids(series20: SnapshotSeries, second_run: Path) -> None:
    final = analyze(read_snapshot(series20.final))
    with pytest.raises(InvalidInput, match="not comparable"):
        find_leaks(read_snapshot(second_run), read_snapshot(series20.target), final)


def test_retainers_name_the_holder(series: SnapshotSeries) -> None:
    analysis = analyze(read_snapshot(series.final))
    snapshot = analysis.snapshot
    node = next(n for n in range(snapshot.node_count) if snapshot.class_of(n) == "LeakyThing")

    rows = retainers(analysis, node)

    assert rows[0].class_name == "Array"
    assert rows[0].edge.startswith("[")
    path = analysis.paths.path(snapshot, node)
    assert [step.edge for step in path][-3:] == [".leakRegistry", ".items", rows[0].edge]
