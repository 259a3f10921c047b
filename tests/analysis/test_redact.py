"""The redactor on real snapshots: a random secret planted in a real Node.js process is
gone from the redacted copy, and everything a reader counts is the same as before."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from heapsnap.analysis.reader import read_snapshot
from heapsnap.analysis.redact import Redactor, redact_chunks
from heapsnap.analysis.views import analyze
from heapsnap.errors import SnapshotFormatError
from tests.support.nodeproc import SECRET_APP, node_binary

from .conftest import APPS


@dataclass(frozen=True)
class Planted:
    secret: str
    plain: Path
    redacted: Path


def write_secret_snapshot(version: str, out: Path) -> tuple[str, Path]:
    """A snapshot of SECRET_APP holding a fresh random secret, written by the process itself."""
    secret = "tok_" + secrets.token_hex(16)
    path = out / f"secret-{version}.heapsnapshot"
    subprocess.run(
        [node_binary(version), "-e", SECRET_APP],
        env={**os.environ, "SECRET": secret, "WRITE_SNAPSHOT": str(path)},
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    return secret, path


def chunks_of(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``data`` cut into pieces of the given sizes in turn."""
    at, turn = 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        yield data[at : at + size]
        at, turn = at + size, turn + 1


@pytest.fixture(scope="module", params=("20", "26"))
def planted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Planted:
    out = tmp_path_factory.mktemp(f"secret{request.param}")
    secret, plain = write_secret_snapshot(request.param, out)
    redacted = out / "redacted.heapsnapshot"
    data = plain.read_bytes()
    redacted.write_bytes(b"".join(redact_chunks(chunks_of(data, [1 << 20]))))
    return Planted(secret, plain, redacted)


def test_the_secret_is_in_the_plain_snapshot_and_gone_from_the_redacted_one(planted: Planted) -> None:
    plain, redacted = planted.plain.read_bytes(), planted.redacted.read_bytes()
    assert plain.count(planted.secret.encode()) >= 5000  # else the test proves nothing
    assert planted.secret.encode() not in redacted
    # Not even a part of it: the first and last halves are gone too.
    half = len(planted.secret) // 2
    assert planted.secret[:half].encode() not in redacted
    assert planted.secret[half:].encode() not in redacted


def test_nodes_edges_and_names_stay_and_each_string_keeps_its_length(planted: Planted) -> None:
    plain, redacted = json.loads(planted.plain.read_bytes()), json.loads(planted.redacted.read_bytes())
    members = ("snapshot", "nodes", "edges", "trace_function_infos", "trace_tree", "samples", "locations")
    for member in members:
        assert redacted.get(member) == plain.get(member), member
    before, after = plain["strings"], redacted["strings"]
    assert len(after) == len(before)
    assert [len(s) for s in after] == [len(s) for s in before]  # JavaScript lengths (UTF-16 units)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) >= 5000 and all(set(after[i]) == {"*"} for i in changed)
    # What a reader needs is kept: class, property and function names.
    kept = set(after)
    assert {"SecretHolder", "flat", "cons", "sliced", "same", "holders", "pattern"} <= kept


def test_every_analysis_gives_the_same_counts_and_sizes(planted: Planted) -> None:
    plain = analyze(read_snapshot(planted.plain))
    redacted = analyze(read_snapshot(planted.redacted))
    assert redacted.summary() == plain.summary()
    rows = {row.name: row for row in redacted.summary()}
    assert rows["SecretHolder"].count == 5000
    assert redacted.total_size == plain.total_size


def test_memlab_loads_the_redacted_snapshot_with_the_same_retained_sizes(
    planted: Planted, memlab_dir: Path
) -> None:
    # Chrome DevTools' loader is not driven here; memlab's, built on the same format, is.
    def retained(path: Path) -> object:
        result = subprocess.run(
            ["node", str(APPS / "memlab_retained.js"), str(memlab_dir), str(path), "all"],
            capture_output=True,
            check=True,
            timeout=300,
        )
        return json.loads(result.stdout)

    assert retained(planted.redacted) == retained(planted.plain)


@pytest.mark.parametrize("sizes", [[1], [8191, 7, 1], [4093, 1, 65536], [1 << 22]])
def test_the_output_does_not_depend_on_where_the_input_is_cut(planted: Planted, sizes: list[int]) -> None:
    data = planted.plain.read_bytes()
    expected = planted.redacted.read_bytes()
    key = data.index(b'"strings"')
    if sizes == [1]:
        # Byte by byte across the key, the start of the strings and a stretch of nodes: the
        # whole file one byte at a time would take minutes.
        head, tail = data[: key - 4096], data[key - 4096 :]
        pieces = [head[: len(head) // 2], head[len(head) // 2 :], *chunks_of(tail[:8192], [1]), tail[8192:]]
    else:
        pieces = list(chunks_of(data, sizes))
    assert b"".join(redact_chunks(pieces)) == expected


def test_memory_stays_bounded_whatever_the_snapshot_size(tmp_path: Path) -> None:
    # Python's own allocations and numpy's, while 1 MiB chunks of a ~120 MB snapshot go through.
    path = tmp_path / "big.heapsnapshot"
    subprocess.run(
        ["node", str(Path(__file__).parents[2] / "bench" / "make_snapshot.js"), "1000000", str(path)],
        check=True,
        timeout=300,
    )
    size = path.stat().st_size
    assert size > 100 << 20
    redactor = Redactor()
    written = 0
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                written += len(redactor.feed(chunk))
        written += len(redactor.finish())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # An escape (\n, \uXXXX) of a redacted string becomes one '*': a little shorter.
    assert size - (1 << 20) < written <= size
    assert peak < 32 << 20, f"peak {peak / (1 << 20):.1f} MiB for a {size / (1 << 20):.0f} MiB snapshot"


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda data: data[: len(data) // 2], "ends early"),
        (lambda data: data[: data.index(b'"strings"') + 20], "ends early"),
        (lambda data: b"", "empty"),
        (lambda data: b'{"snapshot": {}, "nodes": []}', "not a V8 heap snapshot"),
        (lambda data: b"hello", "not a V8 heap snapshot"),
    ],
)
def test_a_bad_snapshot_is_a_clear_error(planted: Planted, cut: object, words: str) -> None:
    data = cut(planted.plain.read_bytes())  # type: ignore[operator]
    with pytest.raises(SnapshotFormatError) as error:
        b"".join(redact_chunks(chunks_of(data, [65536]) if data else iter([b""])))
    assert words in str(error.value)
