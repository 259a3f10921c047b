"""Streaming summary of a heap snapshot, computed while its bytes pass.

Used by the capture engine, which never holds the snapshot::

    summary = StreamingSummary(top=20)
    summary.feed(chunk)        # any split, even mid-token; bytes of the snapshot JSON
    result = summary.finish()  # raises SnapshotFormatError when the text was incomplete
    result.to_dict()           # JSON-ready, for status and --json

Constructors are grouped as Chrome DevTools' Summary view groups them (see
:func:`heapsnap.analysis.layout.class_name`). Node names live in ``strings`` at the end
of the file, so nodes are aggregated by name index while they pass and the names are
resolved when the strings arrive; memory is one chunk plus one entry per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.analysis.layout import NodeLayout, class_name
from heapsnap.analysis.tokenizer import IntArray, SnapshotTokenizer, StringRun
from heapsnap.errors import SnapshotFormatError

__all__ = ["ConstructorStat", "SnapshotSummary", "StreamingSummary"]


@dataclass
class ConstructorStat:
    name: str
    count: int
    self_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "selfSize": self.self_size}


@dataclass
class SnapshotSummary:
    node_count: int
    edge_count: int
    total_self_size: int
    node_fields: list[str]
    top_by_size: list[ConstructorStat] = field(default_factory=list)
    top_by_count: list[ConstructorStat] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeCount": self.node_count,
            "edgeCount": self.edge_count,
            "totalSelfSize": self.total_self_size,
            "nodeFields": list(self.node_fields),
            "topBySize": [stat.to_dict() for stat in self.top_by_size],
            "topByCount": [stat.to_dict() for stat in self.top_by_count],
        }


class StreamingSummary:
    """Summary of a snapshot fed as bytes, split anywhere."""

    def __init__(self, top: int = 20) -> None:
        self.top = top
        self._tokenizer = SnapshotTokenizer(self)
        self._layout: NodeLayout | None = None
        self._header: dict[str, Any] = {}
        self._carry = np.empty(0, dtype=np.int64)
        self._nodes = 0
        self._edge_refs = 0
        self._edge_values = 0
        self._total_self = 0
        # One row per class key: a name index for object/native nodes, -1 - type otherwise.
        self._keys = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._sizes = np.empty(0, dtype=np.int64)
        self._names: dict[int, str] = {}
        self._string_count = 0
        self._result: SnapshotSummary | None = None

    def feed(self, data: bytes) -> None:
        self._tokenizer.feed(data)

    def finish(self) -> SnapshotSummary:
        if self._result is not None:
            return self._result
        self._tokenizer.finish()
        layout = self._require_layout()
        if self._carry.size:
            raise SnapshotFormatError(
                f"heap snapshot member 'nodes' has {self._nodes * layout.field_count + self._carry.size} "
                f"numbers, not a multiple of the {layout.field_count} node_fields: the file is corrupt"
            )
        for section in ("nodes", "edges", "strings"):
            if section not in self._tokenizer.sections:
                raise SnapshotFormatError(
                    f"the heap snapshot has no {section!r} member: the file is not a V8 heap snapshot"
                )
        self._check_counts(layout)
        stats = self._class_stats(layout)
        by_size = sorted(stats, key=lambda s: (-s.self_size, -s.count, s.name))[: self.top]
        by_count = sorted(stats, key=lambda s: (-s.count, -s.self_size, s.name))[: self.top]
        self._result = SnapshotSummary(
            node_count=self._nodes,
            edge_count=self._edge_values // layout.edge_field_count,
            total_self_size=self._total_self,
            node_fields=list(layout.node_fields),
            top_by_size=by_size,
            top_by_count=by_count,
        )
        return self._result

    # SnapshotVisitor

    def header(self, snapshot: dict[str, Any]) -> None:
        self._header = snapshot
        self._layout = NodeLayout.from_header(snapshot)

    def wants_values(self, section: str) -> bool:
        return section == "nodes"

    def ints(self, section: str, values: IntArray) -> None:
        layout = self._require_layout()
        if self._carry.size:
            values = np.concatenate((self._carry, values))
        whole = values.size - values.size % layout.field_count
        self._carry = values[whole:].copy()
        if whole:
            self._add_nodes(layout, values[:whole].reshape(-1, layout.field_count))

    def count(self, section: str, n: int) -> None:
        if section == "edges":
            self._edge_values += n

    def strings(self, first_index: int, run: StringRun) -> None:
        self._string_count = first_index + len(run)
        wanted = self._keys[(self._keys >= first_index) & (self._keys < self._string_count)]
        for index in wanted.tolist():
            self._names[index] = run.get(index - first_index)

    def end_section(self, section: str) -> None:
        del section

    # Aggregation

    def _require_layout(self) -> NodeLayout:
        return NodeLayout.required(self._layout)

    def _add_nodes(self, layout: NodeLayout, records: npt.NDArray[np.int64]) -> None:
        types = records[:, layout.type]
        sizes = records[:, layout.self_size]
        self._nodes += records.shape[0]
        self._edge_refs += int(records[:, layout.edge_count].sum())
        self._total_self += int(sizes.sum())
        keys = layout.class_keys(types, records[:, layout.name])
        # DevTools leaves nodes of size 0 out of the Summary, except native ones.
        shown = (sizes > 0) | (types == layout.native_type)
        keys, sizes = keys[shown], sizes[shown]
        unique, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, minlength=unique.size)
        totals = np.bincount(inverse, weights=sizes, minlength=unique.size).astype(np.int64)
        self._merge(unique, counts, totals)

    def _merge(self, keys: IntArray, counts: IntArray, sizes: IntArray) -> None:
        all_keys = np.concatenate((self._keys, keys))
        unique, inverse = np.unique(all_keys, return_inverse=True)
        self._counts = np.bincount(
            inverse, weights=np.concatenate((self._counts, counts)), minlength=unique.size
        ).astype(np.int64)
        self._sizes = np.bincount(
            inverse, weights=np.concatenate((self._sizes, sizes)), minlength=unique.size
        ).astype(np.int64)
        self._keys = unique

    def _check_counts(self, layout: NodeLayout) -> None:
        expected_nodes = self._header.get("node_count")
        if isinstance(expected_nodes, int) and expected_nodes != self._nodes:
            raise SnapshotFormatError(
                f"the heap snapshot has {self._nodes} nodes but its header says node_count="
                f"{expected_nodes}: the file is corrupt"
            )
        if self._edge_values % layout.edge_field_count:
            raise SnapshotFormatError(
                f"heap snapshot member 'edges' has {self._edge_values} numbers, not a multiple of "
                f"the {layout.edge_field_count} edge_fields: the file is corrupt"
            )
        edges = self._edge_values // layout.edge_field_count
        if edges != self._edge_refs:
            raise SnapshotFormatError(
                f"the heap snapshot has {edges} edges but its nodes' edge_count add up to "
                f"{self._edge_refs}: the file is corrupt"
            )

    def _class_stats(self, layout: NodeLayout) -> list[ConstructorStat]:
        merged: dict[str, ConstructorStat] = {}
        for key, count, size in zip(
            self._keys.tolist(), self._counts.tolist(), self._sizes.tolist(), strict=True
        ):
            if key >= 0:
                if key not in self._names:
                    raise SnapshotFormatError(
                        f"a heap snapshot node names string {key}, beyond the {self._string_count} "
                        "strings read: the file is corrupt"
                    )
                name = self._names[key]
            else:
                name = class_name(layout.node_types[-1 - key], "")
            stat = merged.get(name)
            if stat is None:
                merged[name] = ConstructorStat(name, count, size)
            else:
                stat.count += count
                stat.self_size += size
        return list(merged.values())
