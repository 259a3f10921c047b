"""Redaction of a heap snapshot's string contents, while its bytes stream by.

The snapshot JSON ends with ``strings``; every name in it is an index into that table.
:class:`Redactor` lets the bytes before ``strings`` through unchanged while it marks, in
one flag byte per string, which strings name string values (nodes of type ``string``,
``concatenated string``, ``sliced string`` and ``regexp``) and which name anything a
reader needs (every other node, every edge that names a string, the allocation trace's
functions and scripts). When the table arrives, each string named only by values is
replaced by as many ``*`` as it has UTF-16 units (its JavaScript ``length``); the
others are kept byte for byte. Nodes, edges, ids and sizes are not touched.

Memory is one flag byte per string plus the tokenizer's window, whatever the size of
the snapshot::

    redactor = Redactor()
    for chunk in chunks:
        out.write(redactor.feed(chunk))
    out.write(redactor.finish())   # raises SnapshotFormatError on a bad snapshot
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.analysis.layout import NodeLayout
from heapsnap.analysis.tokenizer import IntArray, SnapshotTokenizer, StringRun, decode_string
from heapsnap.errors import SnapshotFormatError

__all__ = ["PLACEHOLDER", "VALUE_NODE_TYPES", "Redactor", "redact_chunks"]

#: The character a redacted string is made of.
PLACEHOLDER = b"*"
#: Node types whose name is the content of a string the program holds.
VALUE_NODE_TYPES = ("string", "concatenated string", "sliced string", "regexp")
#: V8's own labels of string nodes, not contents: kept so the file reads as before.
_LABELS = frozenset({"(concatenated string)", "(sliced string)"})
#: Edge types whose ``name_or_index`` is a number, not a string index.
_NUMBERED_EDGES = ("element", "hidden")
_VALUE, _KEEP = 1, 2
_KEY = b'"strings"'
_STAR = PLACEHOLDER[0]
_BACKSLASH = ord("\\")


class Redactor:
    """Rewrites a heap snapshot fed as bytes split anywhere; see the module's docstring."""

    def __init__(self) -> None:
        self._tokenizer = SnapshotTokenizer(self)
        self._layout: NodeLayout | None = None
        self._flags = np.zeros(1 << 16, dtype=np.uint8)
        self._carry = np.empty(0, dtype=np.int64)
        self._edge_carry = np.empty(0, dtype=np.int64)
        self._trace_carry = np.empty(0, dtype=np.int64)
        self._value_types = np.empty(0, dtype=np.int64)
        self._string_edges = np.empty(0, dtype=np.int64)
        self._trace_fields: tuple[int, ...] = ()
        self._trace_width = 0
        # Bytes before the strings pass as they are; a tail that may begin the key waits.
        self._passing = True
        self._tail = b""
        self._out: list[bytes] = []
        self._split_at = -1
        self.strings_redacted = 0
        self.bytes_in = 0

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that can be given out after ``data``."""
        if not data:
            return b""
        self.bytes_in += len(data)
        if not self._passing:
            self._tokenizer.feed(data)
            return self._take()
        data = self._tail + data
        at = data.find(_KEY)
        if at < 0:
            # Keep back what could be the start of the key cut by the chunk's end.
            keep = len(_KEY) - 1
            self._tail = data[-keep:]
            head = data[:-keep]
            self._tokenizer.feed(head)
            return head
        self._tail = b""
        head = data[: at + len(_KEY)]
        self._tokenizer.feed(head)
        # The key's colon is not fed yet: 'strings' must be the very next member read.
        self._split_at = len(self._tokenizer.sections)
        self._passing = False
        self._out.append(b":[")
        self._tokenizer.feed(data[at + len(_KEY) :])
        return head + self._take()

    def finish(self) -> bytes:
        """The last bytes; raises :class:`SnapshotFormatError` unless the snapshot was whole."""
        if self._passing:
            self._tokenizer.feed(self._tail)
            self._tail = b""
        self._tokenizer.finish()
        if self._passing or self._layout is None or "strings" not in self._tokenizer.sections:
            raise SnapshotFormatError(
                "the heap snapshot has no 'strings' member: the file is not a V8 heap snapshot"
            )
        for name, carry in (("nodes", self._carry), ("edges", self._edge_carry)):
            if carry.size:
                raise SnapshotFormatError(
                    f"heap snapshot member {name!r} does not hold a whole number of records: "
                    "the file is corrupt"
                )
        self._out.append(b"]}")
        return self._take()

    def _take(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # SnapshotVisitor

    def header(self, snapshot: dict[str, Any]) -> None:
        layout = self._layout = NodeLayout.from_header(snapshot)
        self._value_types = np.array(
            [i for i, name in enumerate(layout.node_types) if name in VALUE_NODE_TYPES], dtype=np.int64
        )
        self._string_edges = np.array(
            [i for i, name in enumerate(layout.edge_types) if name not in _NUMBERED_EDGES], dtype=np.int64
        )
        meta = snapshot.get("meta")
        fields = meta.get("trace_function_info_fields") if isinstance(meta, dict) else None
        if isinstance(fields, list) and fields:
            self._trace_width = len(fields)
            self._trace_fields = tuple(i for i, f in enumerate(fields) if f in ("name", "script_name"))

    def wants_values(self, section: str) -> bool:
        return section in ("nodes", "edges") or (
            section == "trace_function_infos" and bool(self._trace_fields)
        )

    def ints(self, section: str, values: IntArray) -> None:
        layout = NodeLayout.required(self._layout)
        if section == "nodes":
            self._carry, records = _records(self._carry, values, layout.field_count)
            if records.size:
                types, names = records[:, layout.type], records[:, layout.name]
                value = np.isin(types, self._value_types)
                self._mark(names[value], _VALUE)
                self._mark(names[~value], _KEEP)
        elif section == "edges":
            self._edge_carry, records = _records(self._edge_carry, values, layout.edge_field_count)
            if records.size:
                named = np.isin(records[:, layout.edge_type], self._string_edges)
                self._mark(records[named, layout.edge_name], _KEEP)
        elif section == "trace_function_infos" and self._trace_width:
            self._trace_carry, records = _records(self._trace_carry, values, self._trace_width)
            for column in self._trace_fields:
                self._mark(records[:, column], _KEEP)

    def count(self, section: str, n: int) -> None:
        del section, n

    def strings(self, first_index: int, run: StringRun) -> None:
        self._check_split()
        self._out.append(run.gap)  # the separator as V8 wrote it: the output is the same, however cut
        self._out.append(self._redact_run(first_index, run))

    def end_section(self, section: str) -> None:
        if section == "strings":
            self._check_split()

    def _check_split(self) -> None:
        sections = self._tokenizer.sections
        if self._split_at < 0 or len(sections) != self._split_at + 1:
            raise SnapshotFormatError(
                "the heap snapshot's 'strings' member is not where V8 writes it (last, after every "
                "other member): the file is corrupt or not a V8 heap snapshot"
            )

    # Marking and rewriting

    def _mark(self, indexes: IntArray, flag: int) -> None:
        if indexes.size == 0:
            return
        top = int(indexes.max())
        if top >= self._flags.size:
            if top >= 1 << 32:
                raise SnapshotFormatError(
                    f"a heap snapshot name points at string {top}, beyond 32 bits: the file is corrupt"
                )
            grown = np.zeros(max(top + 1, self._flags.size * 2), dtype=np.uint8)
            grown[: self._flags.size] = self._flags
            self._flags = grown
        self._flags[indexes] |= flag

    def _redact_run(self, first: int, run: StringRun) -> bytes:
        count = len(run)
        flags = np.zeros(count, dtype=np.uint8)
        known = max(0, min(count, self._flags.size - first))
        flags[:known] = self._flags[first : first + known]
        # Anything no kept node or edge names is redacted: contents, and strings of no use.
        chosen = np.flatnonzero((flags & _KEEP) == 0)
        if chosen.size == 0:
            return run.data
        raw = np.frombuffer(run.data, dtype=np.uint8)
        starts, ends = run.starts[chosen], run.ends[chosen]
        # Escapes and bytes beyond ASCII take more bytes than UTF-16 units: such strings
        # (few: V8 writes \uXXXX for any non-ASCII) are decoded to learn their length.
        special = np.zeros(raw.size + 1, dtype=np.int64)
        np.cumsum((raw == _BACKSLASH) | (raw >= 0x80), out=special[1:])
        lengths = ends - starts
        odd = np.flatnonzero(special[ends] != special[starts])
        drop_needed = False
        labels = []
        for i in odd.tolist():
            text = decode_string(run.data[int(starts[i]) : int(ends[i])])
            units = len(text.encode("utf-16-le")) // 2
            if units != lengths[i]:
                lengths[i] = units
                drop_needed = True
        for i in np.flatnonzero((lengths > 12) & (lengths < 24)).tolist():
            if run.data[int(starts[i]) : int(ends[i])].decode("ascii", "replace") in _LABELS:
                labels.append(i)
        if labels:
            keep = np.ones(chosen.size, dtype=bool)
            keep[labels] = False
            starts, ends, lengths = starts[keep], ends[keep], lengths[keep]
        self.strings_redacted += int(starts.size)
        out = raw.copy()
        marks = np.zeros(raw.size + 1, dtype=np.int8)
        marks[starts] += 1
        marks[starts + lengths] -= 1
        out[np.cumsum(marks[:-1], dtype=np.int8) > 0] = _STAR
        if not drop_needed:
            return out.tobytes()
        drops = np.zeros(raw.size + 1, dtype=np.int8)
        drops[starts + lengths] += 1
        drops[ends] -= 1
        kept: npt.NDArray[np.uint8] = out[np.cumsum(drops[:-1], dtype=np.int8) == 0]
        return kept.tobytes()


def _records(carry: IntArray, values: IntArray, width: int) -> tuple[IntArray, npt.NDArray[np.int64]]:
    """Whole records of ``width`` numbers, and the numbers left over for the next call."""
    if carry.size:
        values = np.concatenate((carry, values))
    whole = values.size - values.size % width
    return values[whole:].copy(), values[:whole].reshape(-1, width)


def redact_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The redacted bytes of a snapshot given as chunks (plain JSON, not gzip)."""
    redactor = Redactor()
    for chunk in chunks:
        out = redactor.feed(chunk)
        if out:
            yield out
    tail = redactor.finish()
    if tail:
        yield tail
