"""DevTools' Summary and Comparison views, leak suspects and retainers, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.analysis import _kernels
from heapsnap.analysis.graph import (
    SYSTEM_DISTANCE,
    Dominators,
    PathStep,
    ShortestPaths,
    dominators,
    shortest_paths,
)
from heapsnap.analysis.layout import class_name
from heapsnap.analysis.reader import HeapSnapshot
from heapsnap.errors import InvalidInput

__all__ = [
    "Analysis",
    "ClassDiff",
    "ClassSummary",
    "Comparison",
    "LeakReport",
    "LeakSuspect",
    "Retainer",
    "analyze",
    "compare",
    "find_leaks",
    "retainers",
]

#: Node types whose leaks are V8's business, not the program's.
_INTERNAL_TYPES = frozenset({"hidden", "code", "synthetic", "object shape"})


@dataclass(frozen=True)
class ClassSummary:
    name: str
    count: int
    shallow_size: int
    retained_size: int
    distance: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "shallowSize": self.shallow_size,
            "retainedSize": self.retained_size,
            "distance": self.distance,
        }


@dataclass(eq=False)
class Analysis:
    """A snapshot with its dominators and class index, computed once."""

    snapshot: HeapSnapshot
    dominators: Dominators
    class_index: npt.NDArray[np.int64]
    _paths: ShortestPaths | None = None

    @property
    def paths(self) -> ShortestPaths:
        if self._paths is None:
            self._paths = shortest_paths(self.snapshot)
        return self._paths

    @property
    def total_size(self) -> int:
        return int(self.dominators.retained[self.snapshot.root])

    def class_label(self, index: int) -> str:
        layout = self.snapshot.layout
        types = len(layout.node_types)
        if index < types:
            return class_name(layout.node_types[index], "")
        return self.snapshot.strings[index - types]

    def summary(self, top: int | None = None) -> list[ClassSummary]:
        """Count, shallow and retained size per class, largest retained first."""
        snapshot = self.snapshot
        shown = _shown(snapshot)
        keys = self.class_index
        size = int(keys.max()) + 1 if keys.size else 0
        counts = np.bincount(keys[shown], minlength=size)
        shallow = np.bincount(keys[shown], weights=snapshot.self_size[shown], minlength=size)
        first, children = self.dominators.children(snapshot.root)
        retained = _kernels.class_retained(
            first, children, snapshot.root, keys, shown.astype(np.uint8), self.dominators.retained, size
        )
        distance = np.full(size, np.iinfo(np.int32).max, dtype=np.int64)
        if self._paths is not None:
            np.minimum.at(distance, keys[shown], self._paths.distance[shown])
        merged: dict[str, list[int]] = {}
        for index in np.flatnonzero(counts).tolist():
            entry = merged.setdefault(self.class_label(index), [0, 0, 0, int(distance[index])])
            entry[0] += int(counts[index])
            entry[1] += int(shallow[index])
            entry[2] += int(retained[index])
            entry[3] = min(entry[3], int(distance[index]))
        rows = [
            ClassSummary(
                name, count, shallow_size, retained_size, -1 if dist >= SYSTEM_DISTANCE * 10 else dist
            )
            for name, (count, shallow_size, retained_size, dist) in merged.items()
        ]
        rows.sort(key=lambda row: (-row.retained_size, -row.shallow_size, row.name))
        return rows[:top] if top else rows


def _shown(snapshot: HeapSnapshot) -> npt.NDArray[np.bool_]:
    # DevTools leaves nodes of size 0 out of the Summary, except native ones.
    shown: npt.NDArray[np.bool_] = (snapshot.self_size > 0) | (
        snapshot.node_type == snapshot.layout.native_type
    )
    return shown


def class_index(snapshot: HeapSnapshot) -> npt.NDArray[np.int64]:
    """Dense class numbers: the node type for unnamed classes, types + name index otherwise."""
    layout = snapshot.layout
    named = (snapshot.node_type == layout.object_type) | (snapshot.node_type == layout.native_type)
    index: npt.NDArray[np.int64] = np.where(
        named, snapshot.node_name.astype(np.int64) + len(layout.node_types), snapshot.node_type
    ).astype(np.int64)
    return index


def analyze(snapshot: HeapSnapshot) -> Analysis:
    return Analysis(snapshot=snapshot, dominators=dominators(snapshot), class_index=class_index(snapshot))


# Comparison


@dataclass(frozen=True)
class ClassDiff:
    name: str
    new_count: int
    deleted_count: int
    new_size: int
    deleted_size: int

    @property
    def count_delta(self) -> int:
        return self.new_count - self.deleted_count

    @property
    def size_delta(self) -> int:
        return self.new_size - self.deleted_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "newCount": self.new_count,
            "deletedCount": self.deleted_count,
            "countDelta": self.count_delta,
            "newSize": self.new_size,
            "deletedSize": self.deleted_size,
            "sizeDelta": self.size_delta,
        }


@dataclass
class Comparison:
    #: "ids" when objects were matched by id, "counts" when only class totals could be.
    method: str
    reason: str
    classes: list[ClassDiff] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "classes": [c.to_dict() for c in self.classes]}


def _class_names(snapshot: HeapSnapshot, nodes: npt.NDArray[Any] | None = None) -> npt.NDArray[np.object_]:
    """Class name of every node (or of ``nodes``), resolving each distinct class once."""
    keys = class_index(snapshot) if nodes is None else class_index(snapshot)[nodes]
    unique, inverse = np.unique(keys, return_inverse=True)
    types = len(snapshot.layout.node_types)
    labels = np.array(
        [
            class_name(snapshot.layout.node_types[k], "") if k < types else snapshot.strings[k - types]
            for k in unique.tolist()
        ],
        dtype=object,
    )
    named: npt.NDArray[np.object_] = labels[inverse]
    return named


@dataclass(frozen=True)
class _Identity:
    common: int
    matching: int

    @property
    def comparable(self) -> bool:
        # Measured: 100% within one session; about 93% between two runs of one program,
        # whose deterministic start-up gives many objects the same ids.
        return self.common > 0 and self.matching >= 0.98 * self.common


def _identity(base: HeapSnapshot, current: HeapSnapshot, sample: int = 20_000) -> _Identity:
    """How many ids both snapshots hold, and how many name an object of the same class and size.

    Ids are assigned per inspector session: within one, an object keeps its id; after a
    session closes (or in another process) ids restart and name unrelated objects.
    """
    common, base_at, current_at = np.intersect1d(base.node_id, current.node_id, return_indices=True)
    if common.size == 0:
        return _Identity(0, 0)
    rng = np.random.default_rng(0)
    pick = rng.choice(common.size, size=min(sample, common.size), replace=False)
    base_at, current_at = base_at[pick], current_at[pick]
    same = (_class_names(base, base_at) == _class_names(current, current_at)) & (
        base.self_size[base_at] == current.self_size[current_at]
    )
    return _Identity(int(pick.size), int(np.count_nonzero(same)))


def _check_same_layout(base: HeapSnapshot, current: HeapSnapshot, names: tuple[str, str]) -> None:
    a, b = base.layout, current.layout
    if (a.node_fields, a.node_types, a.edge_fields, a.edge_types) != (
        b.node_fields,
        b.node_types,
        b.edge_fields,
        b.edge_types,
    ):
        raise InvalidInput(
            f"{names[0]} and {names[1]} were written by different V8 versions (node_fields "
            f"{list(a.node_fields)} vs {list(b.node_fields)}, or different node or edge types), so they "
            "cannot come from one process: compare snapshots of the same process"
        )


def _scripts(snapshot: HeapSnapshot) -> set[str]:
    """File names of the program's own compiled scripts (not Node's internals)."""
    code = snapshot.layout.node_type_index("code")
    names = np.unique(snapshot.node_name[snapshot.node_type == code])
    found = set()
    for index in names.tolist():
        text = snapshot.strings[index]
        if text.startswith(("/", "file://")) and "/node_modules/" not in text:
            found.add(text)
    return found


def compare(
    base: HeapSnapshot, current: HeapSnapshot, names: tuple[str, str] = ("BASE", "CURRENT")
) -> Comparison:
    """DevTools' Comparison view: new and deleted objects per class.

    By id when both snapshots come from one inspector session (ids comparable); by class
    counts when ids restarted in between. Snapshots of different programs or V8 versions
    are refused.
    """
    _check_same_layout(base, current, names)
    identity = _identity(base, current)
    if identity.comparable:
        reason = (
            f"{identity.matching} of {identity.common} sampled common ids name objects of the same "
            "class and size in both: "
            "objects were matched by id"
        )
        return Comparison("ids", reason, _diff_by_id(base, current))
    base_scripts, current_scripts = _scripts(base), _scripts(current)
    if base_scripts and current_scripts and not base_scripts & current_scripts:
        raise InvalidInput(
            f"{names[0]} and {names[1]} come from different processes: no object id names the same object "
            f"in both and they run different scripts ({sorted(base_scripts)[0]} vs "
            f"{sorted(current_scripts)[0]}); compare snapshots of the same process"
        )
    reason = (
        "object ids are not comparable (only "
        f"{identity.matching} of {identity.common} sampled common ids name objects of the same class "
        "and size: the inspector "
        "session closed between the snapshots, or they come from two runs of one program): "
        "classes were compared by their counts and sizes"
    )
    return Comparison("counts", reason, _diff_by_counts(base, current))


def _diff_by_id(base: HeapSnapshot, current: HeapSnapshot) -> list[ClassDiff]:
    base_shown = np.flatnonzero(_shown(base))
    current_shown = np.flatnonzero(_shown(current))
    deleted = base_shown[~np.isin(base.node_id[base_shown], current.node_id[current_shown])]
    added = current_shown[~np.isin(current.node_id[current_shown], base.node_id[base_shown])]
    rows: dict[str, list[int]] = {}
    for nodes, snapshot, slot in ((added, current, 0), (deleted, base, 1)):
        labels = _class_names(snapshot, nodes)
        sizes = snapshot.self_size[nodes]
        unique, inverse = np.unique(labels, return_inverse=True)
        counts = np.bincount(inverse, minlength=unique.size)
        totals = np.bincount(inverse, weights=sizes, minlength=unique.size)
        for name, count, total in zip(unique.tolist(), counts.tolist(), totals.tolist(), strict=True):
            entry = rows.setdefault(name, [0, 0, 0, 0])
            entry[slot] += int(count)
            entry[2 + slot] += int(total)
    return _sorted([ClassDiff(name, *values) for name, values in rows.items()])


def _diff_by_counts(base: HeapSnapshot, current: HeapSnapshot) -> list[ClassDiff]:
    totals: dict[str, list[int]] = {}
    for snapshot, sign in ((current, 1), (base, -1)):
        shown = np.flatnonzero(_shown(snapshot))
        labels = _class_names(snapshot, shown)
        unique, inverse = np.unique(labels, return_inverse=True)
        counts = np.bincount(inverse, minlength=unique.size)
        sizes = np.bincount(inverse, weights=snapshot.self_size[shown], minlength=unique.size)
        for name, count, size in zip(unique.tolist(), counts.tolist(), sizes.tolist(), strict=True):
            entry = totals.setdefault(name, [0, 0])
            entry[0] += sign * int(count)
            entry[1] += sign * int(size)
    rows = [
        ClassDiff(name, max(count, 0), max(-count, 0), max(size, 0), max(-size, 0))
        for name, (count, size) in totals.items()
        if count or size
    ]
    return _sorted(rows)


def _sorted(rows: list[ClassDiff]) -> list[ClassDiff]:
    rows = [row for row in rows if row.new_count or row.deleted_count]
    rows.sort(key=lambda row: (-abs(row.size_delta), -abs(row.count_delta), row.name))
    return rows


# Leaks


@dataclass(frozen=True)
class LeakSuspect:
    name: str
    count: int
    shallow_size: int
    retained_size: int
    representative_id: int
    path: list[PathStep]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "shallowSize": self.shallow_size,
            "retainedSize": self.retained_size,
            "representativeId": self.representative_id,
            "retainerPath": [
                {"edge": step.edge, "className": step.class_name, "id": step.node_id} for step in self.path
            ],
        }


@dataclass
class LeakReport:
    baseline_count: int
    target_new: int
    leaked: int
    suspects: list[LeakSuspect]

    def to_dict(self) -> dict[str, Any]:
        return {
            "targetNewObjects": self.target_new,
            "leakedObjects": self.leaked,
            "suspects": [s.to_dict() for s in self.suspects],
        }


def find_leaks(
    baseline: HeapSnapshot, target: HeapSnapshot, final: Analysis, *, include_internal: bool = False
) -> LeakReport:
    """Objects allocated between ``baseline`` and ``target`` that are still in ``final``.

    Grouped by class in ``final``, each group with the shortest retainer path (from the GC
    roots, weak edges skipped) of its closest object. V8's own objects (code, hidden,
    object shapes) are left out unless ``include_internal``.
    """
    names = ("BASELINE", "TARGET")
    for pair, snapshots in (
        ((names[0], names[1]), (baseline, target)),
        ((names[1], "FINAL"), (target, final.snapshot)),
    ):
        _check_same_layout(*snapshots, pair)
        identity = _identity(*snapshots)
        if not identity.comparable:
            raise InvalidInput(
                f"object ids of {pair[0]} and {pair[1]} are not comparable ({identity.matching} of "
                f"{identity.common} sampled common ids name objects of the same class and size): "
                "take all three snapshots "
                "in one inspector session or with v8.writeHeapSnapshot() in one process"
            )
    new_ids = np.setdiff1d(target.node_id, baseline.node_id, assume_unique=False)
    snapshot = final.snapshot
    leaked = np.flatnonzero(np.isin(snapshot.node_id, new_ids) & _shown(snapshot))
    if not include_internal:
        internal = [snapshot.layout.node_type_index(t) for t in _INTERNAL_TYPES]
        leaked = leaked[~np.isin(snapshot.node_type[leaked], internal)]
    paths = final.paths
    reachable = leaked[(paths.distance[leaked] >= 0) & (paths.distance[leaked] < SYSTEM_DISTANCE)]
    # Report the objects that hold the leak, not what they own: drop leaked objects
    # dominated by another leaked object (their size is in its retained size).
    is_leaked = np.zeros(snapshot.node_count, dtype=bool)
    is_leaked[reachable] = True
    owners = reachable[~is_leaked[final.dominators.idom[reachable]]]
    keys = final.class_index[owners]
    suspects: list[LeakSuspect] = []
    for key in np.unique(keys).tolist():
        members = owners[keys == key]
        closest = int(members[np.argmin(paths.distance[members])])
        suspects.append(
            LeakSuspect(
                name=final.class_label(key),
                count=int(members.size),
                shallow_size=int(snapshot.self_size[members].sum()),
                retained_size=int(final.dominators.retained[members].sum()),
                representative_id=int(snapshot.node_id[closest]),
                path=paths.path(snapshot, closest),
            )
        )
    suspects.sort(key=lambda s: (-s.retained_size, -s.count, s.name))
    return LeakReport(
        baseline_count=baseline.node_count,
        target_new=int(new_ids.size),
        leaked=int(reachable.size),
        suspects=suspects,
    )


# Retainers


@dataclass(frozen=True)
class Retainer:
    edge: str
    node_id: int
    class_name: str
    retained_size: int
    distance: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "edge": self.edge,
            "id": self.node_id,
            "className": self.class_name,
            "retainedSize": self.retained_size,
            "distance": self.distance,
        }


def retainers(analysis: Analysis, node: int) -> list[Retainer]:
    """Every object holding an edge to ``node``, closest to the roots first (weak ones last)."""
    snapshot = analysis.snapshot
    edges = np.flatnonzero(snapshot.edge_to == node)
    holders = np.searchsorted(snapshot.first_edge, edges, side="right") - 1
    weak = snapshot.layout.edge_type_index("weak")
    rows = []
    for edge, holder in zip(edges.tolist(), holders.tolist(), strict=True):
        distance = int(analysis.paths.distance[holder])
        rows.append(
            (
                snapshot.edge_type[edge] == weak,
                distance if distance >= 0 else 2**31,
                Retainer(
                    edge=snapshot.edge_label(edge),
                    node_id=int(snapshot.node_id[holder]),
                    class_name=snapshot.class_of(holder),
                    retained_size=int(analysis.dominators.retained[holder]),
                    distance=distance,
                ),
            )
        )
    rows.sort(key=lambda row: (row[0], row[1]))
    return [row[2] for row in rows]
