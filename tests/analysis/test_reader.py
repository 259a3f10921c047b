from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from heapsnap.analysis.reader import iter_source, read_snapshot
from heapsnap.errors import InvalidInput, SnapshotFormatError

from .conftest import SnapshotSeries
from .reference import load


def test_columns_equal_a_plain_json_reading(series: SnapshotSeries) -> None:
    data = load(series.target)
    meta = data["snapshot"]["meta"]
    fields, width = meta["node_fields"], len(meta["node_fields"])
    nodes = np.array(data["nodes"]).reshape(-1, width)
    edges = np.array(data["edges"]).reshape(-1, 3)

    snapshot = read_snapshot(series.target)

    assert snapshot.layout.node_fields == tuple(fields)
    assert snapshot.node_count == data["snapshot"]["node_count"] == nodes.shape[0]
    assert snapshot.edge_count == data["snapshot"]["edge_count"] == edges.shape[0]
    for column, name in (
        (snapshot.node_type, "type"),
        (snapshot.node_name, "name"),
        (snapshot.node_id, "id"),
        (snapshot.self_size, "self_size"),
    ):
        assert np.array_equal(column, nodes[:, fields.index(name)]), name
    assert np.array_equal(np.diff(snapshot.first_edge), nodes[:, fields.index("edge_count")])
    assert np.array_equal(snapshot.edge_type, edges[:, 0])
    assert np.array_equal(snapshot.edge_name, edges[:, 1])
    assert np.array_equal(snapshot.edge_to, edges[:, 2] // width)
    assert len(snapshot.strings) == len(data["strings"])
    assert [snapshot.strings[i] for i in range(len(data["strings"]))] == data["strings"]


def test_gzip_files_and_byte_streams_read_the_same(series: SnapshotSeries, tmp_path: Path) -> None:
    plain = series.baseline.read_bytes()
    packed = tmp_path / "baseline.heapsnapshot.gz"
    packed.write_bytes(gzip.compress(plain, compresslevel=1))
    expected = read_snapshot(series.baseline)

    for source in (packed, iter([plain[i : i + 777] for i in range(0, len(plain), 777)])):
        snapshot = read_snapshot(source)
        assert np.array_equal(snapshot.node_id, expected.node_id)
        assert np.array_equal(snapshot.edge_to, expected.edge_to)
    assert b"".join(iter_source(packed)) == plain


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:-3], "truncated"),
        (lambda data: b"<html>not a snapshot</html>", "not a V8 heap snapshot"),
        (lambda data: data.replace(b'"self_size",', b"", 1), "lacks self_size"),
        (lambda data: data.replace(b'"nodes":[', b'"nodes":[x', 1), "holds 'x'"),
        (lambda data: gzip.compress(data)[:-20], "gzip"),
    ],
    ids=["half", "last-bytes", "html", "no-self-size", "garbage", "cut-gzip"],
)
def test_bad_files_are_clear_errors(series: SnapshotSeries, tmp_path: Path, mangle, message) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.heapsnapshot"
    bad.write_bytes(mangle(series.baseline.read_bytes()))
    with pytest.raises(SnapshotFormatError, match=message):
        read_snapshot(bad)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        read_snapshot(tmp_path / "nope.heapsnapshot")


def test_nodes_only_reading_keeps_nodes_and_counts_edges(series: SnapshotSeries) -> None:
    full = read_snapshot(series.target)
    light = read_snapshot(series.target, edges=False)
    assert not light.edges_loaded and full.edges_loaded
    assert light.edge_count == full.edge_count
    assert light.edge_to.size == 0
    assert np.array_equal(light.node_id, full.node_id)
    assert np.array_equal(light.self_size, full.self_size)
