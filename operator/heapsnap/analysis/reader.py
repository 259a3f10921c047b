"""Full reader: a heap snapshot streamed into flat numpy columns.

Memory stays close to the columns themselves (about 14 bytes per node and 9 per edge,
plus the strings): the bytes pass through :class:`SnapshotTokenizer` a chunk at a time,
and edges store the target's node ordinal rather than its offset in ``nodes``.
"""

from __future__ import annotations

import ctypes
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from heapsnap.analysis.layout import NodeLayout, class_name
from heapsnap.analysis.s3 import S3Options
from heapsnap.analysis.tokenizer import IntArray, SnapshotTokenizer, StringRun, decode_string
from heapsnap.errors import InvalidInput, SnapshotFormatError

__all__ = ["HeapSnapshot", "SnapshotReader", "iter_source", "read_snapshot"]

CHUNK_SIZE = 4 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(eq=False)
class HeapSnapshot:
    """One snapshot as columns; node ``i`` owns edges ``first_edge[i]:first_edge[i+1]``."""

    layout: NodeLayout
    header: dict[str, Any]
    node_type: npt.NDArray[np.uint8]
    node_name: npt.NDArray[np.uint32]
    node_id: npt.NDArray[np.uint32]
    self_size: npt.NDArray[np.int64]
    first_edge: npt.NDArray[np.int64]
    edge_type: npt.NDArray[np.uint8]
    edge_name: npt.NDArray[np.uint32]
    edge_to: npt.NDArray[np.uint32]
    strings: StringTable
    source: str = ""

    @property
    def node_count(self) -> int:
        return int(self.node_type.size)

    @property
    def edge_count(self) -> int:
        return int(self.first_edge[-1])

    @property
    def edges_loaded(self) -> bool:
        return int(self.edge_type.size) == self.edge_count

    @property
    def root(self) -> int:
        return int(self.header.get("root_index", 0)) // self.layout.field_count

    def name(self, node: int) -> str:
        return self.strings[int(self.node_name[node])]

    def type_name(self, node: int) -> str:
        return self.layout.node_types[int(self.node_type[node])]

    def class_of(self, node: int) -> str:
        return class_name(self.type_name(node), self.name(node))

    def edge_label(self, edge: int) -> str:
        """How DevTools writes an edge in a retainer path: ``.prop``, ``[3]``, ``{map}``..."""
        kind = self.layout.edge_types[int(self.edge_type[edge])]
        raw = int(self.edge_name[edge])
        if kind in ("element", "hidden"):
            return f"[{raw}]" if kind == "element" else f"{{{raw}}}"
        name = self.strings[raw] if raw < len(self.strings) else str(raw)
        if kind == "context":
            return f"->{name}"
        if kind == "weak":
            return f"[[{name}]]"
        if kind == "shortcut" and name.isdigit():
            return f"[{name}]"
        if kind in ("property", "shortcut"):
            return f".{name}" if " " not in name else f'["{name}"]'
        return f"{{{name}}}"

    def nodes_by_id(self) -> npt.NDArray[np.intp]:
        """Node ordinals sorted by object id, for lookups with ``searchsorted``."""
        return np.argsort(self.node_id, kind="stable")

    def find_node(self, node_id: int) -> int:
        matches = np.flatnonzero(self.node_id == node_id)
        if matches.size == 0:
            raise InvalidInput(
                f"no object with id @{node_id} in {self.source or 'the snapshot'}: "
                "give an id shown by 'heapsnap summary' or DevTools (without the @)"
            )
        return int(matches[0])


class StringTable:
    """The snapshot's strings, kept as their raw (escaped) bytes and decoded on access.

    Each chunk's run of strings is one segment; string ``i`` lies in the segment whose
    first index is the last one at or below ``i``.
    """

    def __init__(self) -> None:
        self._segments: list[bytes] = []
        self._firsts: list[int] = []
        self._parts: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]] = []
        self._first = np.zeros(1, dtype=np.int64)
        self._start = np.empty(0, dtype=np.uint32)
        self._end = np.empty(0, dtype=np.uint32)
        self._count = 0
        self._cache: dict[int, str] = {}

    def add(self, run: StringRun) -> None:
        self._firsts.append(self._count)
        self._segments.append(run.data)
        self._parts.append((run.starts.astype(np.uint32), run.ends.astype(np.uint32)))
        self._count += len(run)

    def seal(self) -> None:
        if not self._parts:
            return
        self._first = np.array(self._firsts, dtype=np.int64)
        self._start = np.concatenate([starts for starts, _ in self._parts])
        self._end = np.concatenate([ends for _, ends in self._parts])
        self._parts = []

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> str:
        cached = self._cache.get(index)
        if cached is None:
            if not 0 <= index < self._count:
                raise IndexError(index)
            segment = self._segments[int(np.searchsorted(self._first, index, side="right")) - 1]
            cached = decode_string(segment[int(self._start[index]) : int(self._end[index])])
            self._cache[index] = cached
        return cached

    def index_of(self, text: str) -> int:
        """Index of the first string equal to ``text``, or -1."""
        needle = json.dumps(text).encode()
        bounds = [*self._firsts, self._count]
        for number, segment in enumerate(self._segments):
            at = segment.find(needle)
            while at >= 0:
                low, high = bounds[number], bounds[number + 1]
                hits = np.flatnonzero(self._start[low:high] == at + 1)
                if hits.size and int(self._end[low + hits[0]]) == at + len(needle) - 1:
                    return low + int(hits[0])
                at = segment.find(needle, at + 1)
        return -1


class _Columns:
    """Preallocated columns that grow if the header's counts were too small."""

    def __init__(self, dtypes: dict[str, npt.DTypeLike], rows: int) -> None:
        self.arrays: dict[str, npt.NDArray[Any]] = {
            name: np.empty(max(rows, 1), dtype=dtype) for name, dtype in dtypes.items()
        }
        self.row = 0
        self.phase = 0

    def reserve(self, rows: int) -> None:
        for name, array in self.arrays.items():
            if array.size < rows:
                grown = np.empty(max(rows, array.size * 2), dtype=array.dtype)
                grown[: self.row] = array[: self.row]
                self.arrays[name] = grown

    def finish(self) -> dict[str, npt.NDArray[Any]]:
        return {
            name: array if array.size == self.row else array[: self.row].copy()
            for name, array in self.arrays.items()
        }


_NODE_COLUMNS = ("type", "name", "id", "self_size", "edge_count")
_EDGE_COLUMNS = ("type", "name_or_index", "to_node")


class SnapshotReader:
    """A :class:`SnapshotVisitor` that keeps every node and string, and the edges unless
    ``edges`` is false (they are then only counted: comparison and the baseline and
    target of leak detection need nodes only, at about a fifth of the memory)."""

    def __init__(self, *, edges: bool = True) -> None:
        from heapsnap.analysis import _kernels

        self._keep_edges = edges
        self._edge_numbers = 0
        self._kernels = _kernels
        self._tokenizer = SnapshotTokenizer(self)
        self._layout: NodeLayout | None = None
        self._header: dict[str, Any] = {}
        self._nodes = _Columns({}, 0)
        self._edges = _Columns({}, 0)
        self._node_fields = np.empty(0, dtype=np.int64)
        self._edge_fields = np.empty(0, dtype=np.int64)
        self._strings = StringTable()

    def feed(self, data: bytes) -> None:
        self._tokenizer.feed(data)

    def finish(self, source: str = "") -> HeapSnapshot:
        self._tokenizer.finish()
        layout = self._require_layout()
        for section in ("nodes", "edges", "strings"):
            if section not in self._tokenizer.sections:
                raise SnapshotFormatError(
                    f"the heap snapshot has no {section!r} member: the file is not a V8 heap snapshot"
                )
        for section, columns, width in (
            ("nodes", self._nodes, layout.field_count),
            ("edges", self._edges, layout.edge_field_count),
        ):
            if columns.phase:
                raise SnapshotFormatError(
                    f"heap snapshot member {section!r} does not hold a whole number of records of "
                    f"{width} fields: the file is corrupt"
                )
        self._strings.seal()
        nodes = self._nodes.finish()
        edges = self._edges.finish()
        first_edge = np.zeros(nodes["edge_count"].size + 1, dtype=np.int64)
        np.cumsum(nodes.pop("edge_count"), out=first_edge[1:])
        node_count = int(first_edge.size - 1)
        edge_count = (
            int(edges["type"].size) if self._keep_edges else self._edge_numbers // layout.edge_field_count
        )
        expected = self._header.get("node_count")
        if isinstance(expected, int) and expected != node_count:
            raise SnapshotFormatError(
                f"the heap snapshot has {node_count} nodes but its header says node_count={expected}: "
                "the file is corrupt"
            )
        if int(first_edge[-1]) != edge_count:
            raise SnapshotFormatError(
                f"the heap snapshot has {edge_count} edges but its nodes' edge_count add up to "
                f"{int(first_edge[-1])}: the file is corrupt"
            )
        if node_count and int(nodes["name"].max()) >= len(self._strings):
            raise SnapshotFormatError(
                f"a heap snapshot node names string {int(nodes['name'].max())}, beyond the "
                f"{len(self._strings)} strings: the file is corrupt"
            )
        if edges["to_node"].size and int(edges["to_node"].max()) >= node_count:
            raise SnapshotFormatError("a heap snapshot edge points past the last node: the file is corrupt")
        return HeapSnapshot(
            layout=layout,
            header=self._header,
            node_type=nodes["type"],
            node_name=nodes["name"],
            node_id=nodes["id"],
            self_size=nodes["self_size"],
            first_edge=first_edge,
            edge_type=edges["type"],
            edge_name=edges["name_or_index"],
            edge_to=edges["to_node"],
            strings=self._strings,
            source=source,
        )

    # SnapshotVisitor

    def header(self, snapshot: dict[str, Any]) -> None:
        self._header = snapshot
        self._layout = layout = NodeLayout.from_header(snapshot)
        nodes = int(snapshot.get("node_count", 0) or 0)
        edges = int(snapshot.get("edge_count", 0) or 0)
        self._nodes = _Columns(
            {
                "type": np.uint8,
                "name": np.uint32,
                "id": np.uint32,
                "self_size": np.int64,
                "edge_count": np.int64,
            },
            nodes,
        )
        self._edges = _Columns(
            {"type": np.uint8, "name_or_index": np.uint32, "to_node": np.uint32},
            edges if self._keep_edges else 0,
        )
        self._node_fields = np.array(
            [_NODE_COLUMNS.index(f) if f in _NODE_COLUMNS else -1 for f in layout.node_fields], dtype=np.int64
        )
        self._edge_fields = np.array(
            [_EDGE_COLUMNS.index(f) if f in _EDGE_COLUMNS else -1 for f in layout.edge_fields], dtype=np.int64
        )

    def wants_values(self, section: str) -> bool:
        # Node 20+ records a location for every object made by a known constructor:
        # 4 numbers per object, too costly to keep for what they add here.
        return section == "nodes" or (section == "edges" and self._keep_edges)

    def ints(self, section: str, values: IntArray) -> None:
        layout = self._require_layout()
        if section == "nodes":
            self._scatter_nodes(layout, values)
        elif section == "edges":
            self._scatter_edges(layout, values)

    def count(self, section: str, n: int) -> None:
        if section == "edges":
            self._edge_numbers += n

    def strings(self, first_index: int, run: StringRun) -> None:
        del first_index
        self._strings.add(run)

    def end_section(self, section: str) -> None:
        del section

    def _require_layout(self) -> NodeLayout:
        return NodeLayout.required(self._layout)

    def _scatter_nodes(self, layout: NodeLayout, values: IntArray) -> None:
        columns = self._nodes
        columns.reserve(columns.row + -(-(columns.phase + values.size) // layout.field_count))
        a = columns.arrays
        row, phase, error = self._kernels.scatter_nodes(
            values,
            columns.phase,
            columns.row,
            self._node_fields,
            a["type"],
            a["name"],
            a["id"],
            a["self_size"],
            a["edge_count"],
            len(layout.node_types),
        )
        if error == 1:
            raise SnapshotFormatError(
                f"heap snapshot node {row} has a type beyond the {len(layout.node_types)} types of "
                "'snapshot.meta.node_types': the file is corrupt"
            )
        if error == 2:
            raise SnapshotFormatError(
                f"heap snapshot node {row} has an id beyond 32 bits: the file is corrupt"
            )
        columns.row, columns.phase = row, phase

    def _scatter_edges(self, layout: NodeLayout, values: IntArray) -> None:
        columns = self._edges
        columns.reserve(columns.row + -(-(columns.phase + values.size) // layout.edge_field_count))
        a = columns.arrays
        limit = self._header.get("node_count")
        row, phase, error = self._kernels.scatter_edges(
            values,
            columns.phase,
            columns.row,
            self._edge_fields,
            layout.field_count,
            limit if isinstance(limit, int) else 2**32,
            a["type"],
            a["name_or_index"],
            a["to_node"],
        )
        if error:
            where = "between two nodes" if error == 1 else "past the last node"
            raise SnapshotFormatError(f"heap snapshot edge {row} points {where}: the file is corrupt")
        columns.row, columns.phase = row, phase


def iter_source(
    source: str | Path | Iterable[bytes] | BinaryIO, *, s3: S3Options | None = None
) -> Iterator[bytes]:
    """Bytes of a snapshot from a path (gzip detected by its magic), ``s3://`` URI or stream."""
    if isinstance(source, str) and source.startswith("s3://"):
        yield from _iter_s3(source, s3)
        return
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise InvalidInput(
                f"snapshot file {str(path)!r} does not exist: give the path of a .heapsnapshot"
            ) from None
        except IsADirectoryError:
            raise InvalidInput(
                f"snapshot file {str(path)!r} is a directory: give the path of a .heapsnapshot"
            ) from None
        with file:
            yield from _iter_stream(file)
        return
    if hasattr(source, "read"):
        yield from _iter_stream(source)
        return
    yield from _gunzip_if_needed(iter(source))


def _iter_stream(stream: Any) -> Iterator[bytes]:
    def chunks() -> Iterator[bytes]:
        while True:
            chunk = stream.read(CHUNK_SIZE)
            if not chunk:
                return
            yield bytes(chunk)

    yield from _gunzip_if_needed(chunks())


def _gunzip_if_needed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    first = b""
    for chunk in chunks:
        first += chunk
        if len(first) >= 2:
            break
    if not first.startswith(_GZIP_MAGIC):
        if first:
            yield first
        yield from chunks
        return
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for chunk in _chain(first, chunks):
            pending = chunk
            while pending:
                data = inflater.decompress(pending)
                if data:
                    yield data
                # Concatenated gzip members follow each other (as gzip(1) and `cat` make them).
                pending = inflater.unused_data if inflater.eof else b""
                if pending:
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as error:
        raise SnapshotFormatError(
            f"the gzip stream of the snapshot is corrupt ({error}): copy it again"
        ) from None
    if not inflater.eof:
        raise SnapshotFormatError("the gzip stream of the snapshot ends early: the file is truncated")


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _iter_s3(uri: str, s3: S3Options | None) -> Iterator[bytes]:
    from heapsnap.analysis.s3 import iter_s3_object

    yield from _gunzip_if_needed(iter_s3_object(uri, s3))


def read_snapshot(
    source: str | Path | Iterable[bytes] | BinaryIO, *, s3: S3Options | None = None, edges: bool = True
) -> HeapSnapshot:
    """Read a snapshot into columns; raises :class:`SnapshotFormatError` on bad input.

    With ``edges=False`` the edge columns stay empty (``edges_loaded`` is false): enough
    for :func:`~heapsnap.analysis.views.compare` and for the baseline and target of
    :func:`~heapsnap.analysis.views.find_leaks`, in a fraction of the memory.
    """
    reader = SnapshotReader(edges=edges)
    for chunk in iter_source(source, s3=s3):
        reader.feed(chunk)
    name = str(source) if isinstance(source, str | Path) else ""
    snapshot = reader.finish(name)
    del reader
    _release_free_memory()
    return snapshot


def _release_free_memory() -> None:
    """Give the chunk buffers freed by parsing back to the OS.

    glibc keeps freed multi-MiB blocks in its heap once its mmap threshold has grown,
    which left ~20% of the reader's RSS as free heap; the analyses that follow need it.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
