from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from heapsnap.analysis import _cints, tokenizer
from heapsnap.analysis.render import summary_table
from heapsnap.analysis.stream import StreamingSummary
from heapsnap.analysis.tokenizer import IntArray, SnapshotTokenizer, StringRun, _count_ints, parse_ints
from heapsnap.errors import SnapshotFormatError

from .conftest import LEAK_COUNT, SnapshotSeries
from .reference import load, summary


def _summarize(data: bytes, sizes: list[int], top: int = 20) -> StreamingSummary:
    streaming = StreamingSummary(top=top)
    rng = random.Random(len(data))
    pos = 0
    while pos < len(data):
        size = rng.choice(sizes)
        streaming.feed(data[pos : pos + size])
        pos += size
    return streaming


def test_counts_and_classes_match_a_plain_json_reading(series: SnapshotSeries) -> None:
    data = series.target.read_bytes()
    expected = load(series.target)
    fields = expected["snapshot"]["meta"]["node_fields"]

    result = _summarize(data, [1 << 20], top=100_000).finish()

    assert result.node_fields == fields
    assert result.node_count == expected["snapshot"]["node_count"] == len(expected["nodes"]) // len(fields)
    assert result.edge_count == expected["snapshot"]["edge_count"] == len(expected["edges"]) // 3
    assert result.total_self_size == sum(expected["nodes"][fields.index("self_size") :: len(fields)])
    assert {s.name: (s.count, s.self_size) for s in result.top_by_size} == summary(expected)


def test_chunks_split_anywhere_give_the_same_summary(series: SnapshotSeries) -> None:
    data = series.final.read_bytes()
    whole = _summarize(data, [len(data)]).finish().to_dict()
    # Tiny chunks cut every number, string, escape and member name somewhere.
    assert _summarize(data, [1, 2, 3, 5, 7, 11, 64, 1000, 4096]).finish().to_dict() == whole


def test_the_planted_leak_ranks_by_count(series: SnapshotSeries) -> None:
    result = _summarize(series.target.read_bytes(), [102_400]).finish()
    by_count = {s.name: s for s in result.top_by_count}
    assert by_count["LeakyThing"].count == LEAK_COUNT
    baseline = _summarize(series.baseline.read_bytes(), [102_400], top=100_000).finish()
    assert "LeakyThing" not in {s.name for s in baseline.top_by_count}


def test_to_dict_is_json(series: SnapshotSeries) -> None:
    result = _summarize(series.baseline.read_bytes(), [1 << 20], top=5).finish()
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["nodeCount"] == result.node_count
    assert len(payload["topBySize"]) == 5
    assert payload["topBySize"][0]["selfSize"] >= payload["topBySize"][-1]["selfSize"]


def _header(fields: list[str]) -> dict[str, object]:
    return {
        "meta": {
            "node_fields": fields,
            "node_types": [["hidden", "array", "string", "object"], "string", "number", "number", "number"],
            "edge_fields": ["type", "name_or_index", "to_node"],
            "edge_types": [["context", "element", "property", "internal", "hidden", "shortcut", "weak"]],
        },
        "node_count": 1,
        "edge_count": 0,
    }


def _tiny(fields: list[str], nodes: list[int]) -> bytes:
    text = json.dumps({"snapshot": _header(fields), "nodes": nodes, "edges": [], "strings": ["", "Foo"]})
    return text.encode()


def test_a_hand_made_six_field_snapshot_parses() -> None:
    streaming = StreamingSummary()
    streaming.feed(
        _tiny(["type", "name", "id", "self_size", "edge_count", "detachedness"], [3, 1, 1, 40, 0, 0])
    )
    result = streaming.finish()
    assert (result.node_count, result.edge_count, result.total_self_size) == (1, 0, 40)
    assert [(s.name, s.count) for s in result.top_by_count] == [("Foo", 1)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello world", "not a V8 heap snapshot"),
        (b'{"nodes": [1, 2, x]}', "holds 'x'"),
        (b'{"snapshot": {"meta": {}}, "nodes": []}', "snapshot.meta.node_fields"),
        (_tiny(["type", "name", "id", "edge_count"], [3, 1, 1, 0]), "lacks self_size"),
        (_tiny(["type", "name", "id", "self_size", "edge_count"], [3, 1, 1, 40, 0, 7]), "not a multiple"),
        (b'{"snapshot": {}, "edges": []}', "snapshot.meta"),
        (b'{"a": 1} {"b": 2}', "after its closing"),
    ],
)
def test_bad_input_is_a_clear_error(data: bytes, message: str) -> None:
    streaming = StreamingSummary()
    with pytest.raises(SnapshotFormatError, match=message):
        streaming.feed(data)
        streaming.finish()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"\n", []),
        (b"0", [0]),
        (b",5215,13913\n,72,", [5215, 13913, 72]),
        (b" 1 , 2 ", [1, 2]),
        (b"1,x", "holds 'x'"),
        (b"1,-2", "holds '-'"),
        (b"1,2.5", "holds '.'"),
        (b"1,12345678901234567890", "more than 18 digits"),
    ],
)
@pytest.mark.parametrize("parser", ["C", "numpy"])
def test_integer_runs_parse_exactly_or_name_the_bad_byte(
    data: bytes, expected: list[int] | str, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if parser == "numpy":  # an install built without a C compiler
        monkeypatch.setattr(tokenizer, "_c_parse", None)
    if isinstance(expected, str):
        with pytest.raises(SnapshotFormatError, match=expected):
            parse_ints(data)
    else:
        assert parse_ints(data).tolist() == expected
        assert parse_ints(memoryview(data)).tolist() == expected


def test_the_c_parser_is_built_and_used() -> None:
    # pip builds it from _cints.c; without gcc and Python's headers it is silently left out.
    assert tokenizer._c_parse is _cints.parse, "install gcc, then pip install -e . again"


def test_the_c_parser_reads_what_the_numpy_parser_reads() -> None:
    rng = np.random.default_rng(7)
    numbers = np.concatenate((rng.integers(0, 10 ** rng.integers(1, 19, 50_000)), [0, 10**18 - 1]))
    separators = rng.choice([",", "\n,", ", ", "\t"], numbers.size)
    text = "".join(f"{sep}{n}" for sep, n in zip(separators, numbers.tolist(), strict=True)).encode()
    out = np.empty(len(text) // 2 + 1, dtype=np.int64)

    count = _cints.parse(text, out)

    assert count == numbers.size
    assert np.array_equal(out[:count], numbers)
    assert np.array_equal(out[:count], tokenizer._parse_ints_exactly(text, "nodes"))


@pytest.mark.parametrize(
    "data", [b"1,2,x", b"-1", b"1;2", b"1234567890123456789", b"1,2]", b'1,"2', b"1,2.5", b"\xff"]
)
def test_the_c_parser_refuses_what_it_cannot_read_exactly(data: bytes) -> None:
    assert _cints.parse(data, np.empty(len(data), dtype=np.int64)) == -1


def test_the_c_parser_checks_its_output_buffer() -> None:
    with pytest.raises(ValueError, match="need room for 3 int64"):
        _cints.parse(b"1,2,3", np.empty(2, dtype=np.int64))
    with pytest.raises(ValueError, match="not aligned"):
        _cints.parse(b"1,2,3", np.empty(4 * 8 + 1, dtype=np.uint8)[1:].view(np.int64))
    with pytest.raises(TypeError):
        _cints.parse(b"1,2,3", b"read-only bytes, not a writable buffer")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\n,", 0),
        (b"7", 1),
        (b",1,1,7\n,5,10437,21168\n,", 6),
        (b" 1 , 2 ", 2),
        (b"1,x", "holds 'x'"),
        (b"1,2.5", "holds '.'"),
        (b'1,"2', "holds '\"'"),
        (b"1,2]", "holds ']'"),
    ],
)
def test_edge_numbers_are_counted_as_the_parser_would_read_them(data: bytes, expected: int | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(SnapshotFormatError, match=expected):
            _count_ints(data, "edges")
    else:
        assert _count_ints(data, "edges") == _count_ints(memoryview(data), "edges") == expected


class _Strings:
    """A visitor that keeps the strings and the order the members ended in."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.ended: list[str] = []

    def header(self, snapshot: dict[str, Any]) -> None:
        del snapshot

    def wants_values(self, section: str) -> bool:
        return False

    def ints(self, section: str, values: IntArray) -> None:
        raise AssertionError("no values were asked for")

    def count(self, section: str, n: int) -> None:
        del section, n

    def strings(self, first_index: int, run: StringRun) -> None:
        assert first_index == len(self.texts)
        self.texts += [run.get(i) for i in range(len(run))]

    def end_section(self, section: str) -> None:
        self.ended.append(section)


def test_strings_and_nested_arrays_longer_than_a_scan_window_read_whole() -> None:
    # The tokenizer scans these 128 KiB at a time, whatever the size of the chunks fed.
    strings = ["", "a" * 300_000, 'a quote " a backslash \\ a bracket ]', "é" * 70_000]
    strings += [f"s{i}" for i in range(20_000)]
    nested = [[i, [i, [i]]] for i in range(40_000)]
    data = json.dumps({"snapshot": {}, "trace_tree": nested, "strings": strings}).encode()
    for sizes in ([len(data)], [1 << 20], [7, 4096, 100_000]):
        visitor = _Strings()
        tokenizer = SnapshotTokenizer(visitor)
        rng, pos = random.Random(len(sizes)), 0
        while pos < len(data):
            size = rng.choice(sizes)
            tokenizer.feed(data[pos : pos + size])
            pos += size
        tokenizer.finish()
        assert visitor.texts == strings
        assert visitor.ended == ["snapshot", "trace_tree", "strings"]


def test_a_truncated_snapshot_is_refused(series: SnapshotSeries) -> None:
    data = series.baseline.read_bytes()
    for cut in (len(data) // 3, len(data) - 2):
        streaming = StreamingSummary()
        streaming.feed(data[:cut])
        with pytest.raises(SnapshotFormatError, match="truncated"):
            streaming.finish()


def test_a_file_of_json_that_is_no_snapshot_is_refused() -> None:
    streaming = StreamingSummary()
    streaming.feed(b'{"hello": "world", "list": [1, 2]}')
    with pytest.raises(SnapshotFormatError, match="not a V8 heap snapshot"):
        streaming.finish()


def test_the_capture_path_does_not_load_the_compiled_analyses() -> None:
    code = (
        "import sys; from heapsnap.analysis.stream import StreamingSummary; "
        "from heapsnap.analysis.render import summary_table; "
        "print('numba' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_summary_table_lists_both_rankings(series: SnapshotSeries) -> None:
    text = summary_table(_summarize(series.target.read_bytes(), [1 << 20], top=3).finish())
    assert "Top constructors by self size" in text and "Top constructors by count" in text
    assert len(text.splitlines()) == 1 + 2 * (1 + 1 + 2 + 3)
