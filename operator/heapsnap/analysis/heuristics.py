"""The leak heuristics memlab users rely on: duplicated strings, collections that keep
growing across a series, objects with the most outgoing references, globals the program
added. All vectorised over the reader's CSR columns (no Python loop over nodes).

What V8 writes, and so what is counted:

- A small integer (Smi) is not an object in a heap snapshot: an element, property, key or
  value that holds one has no edge. Counts below are of slots holding a heap value
  (string, object, closure, heap number...), which is what a cache of objects holds.
- Array: its ``element`` edges. Plain ``Object``: its ``property`` edges but
  ``__proto__``, plus its ``element`` edges. ``Map`` and ``Set``: the entries of its
  ``{table}`` (an OrderedHashMap/Set whose key, value and chain slots are numbered
  internal edges; the chain slot is always a Smi, so each run of consecutive slot numbers
  is one entry).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.analysis.graph import PathStep
from heapsnap.analysis.reader import HeapSnapshot
from heapsnap.errors import InvalidInput

__all__ = [
    "COLLECTION_KINDS",
    "EVAL_GLOBALS",
    "AppGlobal",
    "CollectionSizes",
    "DuplicateString",
    "FanOut",
    "GlobalsReport",
    "GrowingCollection",
    "Inspection",
    "app_globals",
    "collection_sizes",
    "duplicated_strings",
    "fresh_node_globals",
    "global_names",
    "growing_collections",
    "inspect",
    "node_version",
    "string_duplicates",
    "top_fan_out",
]

#: The classes whose element count is followed across a series.
COLLECTION_KINDS = ("Map", "Set", "Array", "Object")


def _name_index(snapshot: HeapSnapshot, text: str) -> int:
    return snapshot.strings.index_of(text)


def _edge_type(snapshot: HeapSnapshot, name: str) -> int:
    index = snapshot.layout.edge_type_index(name)
    return index if index >= 0 else 255


def _edges_of(
    snapshot: HeapSnapshot, nodes: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(position in ``nodes``, edge index) of every edge of ``nodes``."""
    starts = snapshot.first_edge[nodes]
    lengths = snapshot.first_edge[nodes + 1] - starts
    owner = np.repeat(np.arange(nodes.size, dtype=np.int64), lengths)
    before = np.cumsum(lengths) - lengths
    edges = (
        np.arange(int(lengths.sum()), dtype=np.int64)
        - np.repeat(before, lengths)
        + np.repeat(starts, lengths)
    )
    return owner, edges


def _count_per_node(snapshot: HeapSnapshot, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """How many edges of each node ``mask`` selects (a prefix sum, 4 bytes per edge)."""
    total: npt.NDArray[np.int64] = np.zeros(mask.size + 1, dtype=np.int32 if mask.size < 2**31 else np.int64)
    np.cumsum(mask, out=total[1:])
    after, before = total[snapshot.first_edge[1:]], total[snapshot.first_edge[:-1]]
    return (after - before).astype(np.int64)


def _reference_mask(snapshot: HeapSnapshot) -> npt.NDArray[np.bool_]:
    """Edges a program made: properties (not ``__proto__``) and elements."""
    proto = _name_index(snapshot, "__proto__")
    prop = snapshot.edge_type == _edge_type(snapshot, "property")
    if proto >= 0:
        prop &= snapshot.edge_name != proto
    mask: npt.NDArray[np.bool_] = prop | (snapshot.edge_type == _edge_type(snapshot, "element"))
    return mask


def _objects_named(snapshot: HeapSnapshot, name: str) -> npt.NDArray[np.int64]:
    index = _name_index(snapshot, name)
    if index < 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero((snapshot.node_type == snapshot.layout.object_type) & (snapshot.node_name == index))


def _table_entries(
    snapshot: HeapSnapshot, collections: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Entries and heap references (keys plus values) in the ``{table}`` of each Map/Set."""
    entries = np.zeros(collections.size, dtype=np.int64)
    references = np.zeros(collections.size, dtype=np.int64)
    table_name = _name_index(snapshot, "table")
    if collections.size == 0 or table_name < 0:
        return entries, references
    internal = _edge_type(snapshot, "internal")
    owner, edges = _edges_of(snapshot, collections)
    is_table = (snapshot.edge_type[edges] == internal) & (snapshot.edge_name[edges] == table_name)
    holders, tables = owner[is_table], snapshot.edge_to[edges[is_table]].astype(np.int64)
    t_owner, t_edges = _edges_of(snapshot, tables)
    keep = snapshot.edge_type[t_edges] == internal
    t_owner, names = t_owner[keep], snapshot.edge_name[t_edges[keep]]
    unique, inverse = np.unique(names, return_inverse=True)
    # The slots are numbered internal edges ({5}, {6}...); {map} and the like are not.
    slot_of = np.array(
        [int(text) if text.isdigit() else -1 for text in (snapshot.strings[int(i)] for i in unique.tolist())],
        dtype=np.int64,
    )
    slots = slot_of[inverse]
    numbered = slots >= 0
    t_owner, slots = t_owner[numbered], slots[numbered]
    order = np.lexsort((slots, t_owner))
    t_owner, slots = t_owner[order], slots[order]
    starts_run = np.ones(slots.size, dtype=bool)
    starts_run[1:] = (t_owner[1:] != t_owner[:-1]) | (slots[1:] != slots[:-1] + 1)
    per_table_entries = np.bincount(t_owner[starts_run], minlength=tables.size)
    per_table_refs = np.bincount(t_owner, minlength=tables.size)
    np.add.at(entries, holders, per_table_entries)
    np.add.at(references, holders, per_table_refs)
    return entries, references


# Duplicated strings


@dataclass(frozen=True)
class DuplicateString:
    value: str
    count: int
    size: int
    wasted: int
    example_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "count": self.count,
            "size": self.size,
            "wastedSize": self.wasted,
            "exampleId": self.example_id,
        }


def duplicated_strings(snapshot: HeapSnapshot, top: int = 25) -> list[DuplicateString]:
    """Flat strings (node type ``string``) with the same value and size held more than once,
    by wasted bytes: ``(count - 1) x self size``.

    Concatenated strings are left out (their bytes are in their parts, which are flat
    strings counted here), and so are sliced strings (they share their parent's bytes).
    V8 writes at most the first 1024 characters of a string: two strings of one size and
    the same first 1024 characters count as equal.
    """
    return string_duplicates(snapshot, top)[0]


def string_duplicates(snapshot: HeapSnapshot, top: int = 25) -> tuple[list[DuplicateString], int]:
    """:func:`duplicated_strings` and the bytes wasted by all duplicates, not only the top."""
    strings = np.flatnonzero(snapshot.node_type == snapshot.layout.node_type_index("string"))
    if strings.size == 0:
        return [], 0
    key = (snapshot.node_name[strings].astype(np.uint64) << np.uint64(32)) | np.minimum(
        snapshot.self_size[strings], 2**32 - 1
    ).astype(np.uint64)
    unique, first, counts = np.unique(key, return_index=True, return_counts=True)
    sizes = (unique & np.uint64(2**32 - 1)).astype(np.int64)
    wasted = (counts - 1) * sizes
    picked = np.flatnonzero(counts > 1)
    picked = picked[np.lexsort((-counts[picked], -wasted[picked]))][:top]
    rows = []
    for group in picked.tolist():
        node = int(strings[first[group]])
        rows.append(
            DuplicateString(
                value=snapshot.name(node),
                count=int(counts[group]),
                size=int(sizes[group]),
                wasted=int(wasted[group]),
                example_id=int(snapshot.node_id[node]),
            )
        )
    return rows, int(wasted.sum())


# Fan-out


@dataclass(frozen=True)
class FanOut:
    node_id: int
    class_name: str
    references: int
    self_size: int
    retained_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "className": self.class_name,
            "references": self.references,
            "selfSize": self.self_size,
            "retainedSize": self.retained_size,
        }


def top_fan_out(
    snapshot: HeapSnapshot, top: int = 25, retained: npt.NDArray[np.float64] | None = None
) -> list[FanOut]:
    """JS objects with the most outgoing references: properties (not ``__proto__``) and
    elements, and for a Map or Set the keys and values in its table."""
    counts = _count_per_node(snapshot, _reference_mask(snapshot))
    for kind in ("Map", "Set"):
        nodes = _objects_named(snapshot, kind)
        counts[nodes] = _table_entries(snapshot, nodes)[1]
    counts[snapshot.node_type != snapshot.layout.object_type] = 0
    order = np.argsort(-counts, kind="stable")[:top]
    order = order[counts[order] > 0]
    return [
        FanOut(
            node_id=int(snapshot.node_id[n]),
            class_name=snapshot.class_of(n),
            references=int(counts[n]),
            self_size=int(snapshot.self_size[n]),
            retained_size=int(retained[n]) if retained is not None else -1,
        )
        for n in order.tolist()
    ]


# Growing collections


@dataclass(eq=False)
class CollectionSizes:
    """Element count of every Map, Set, Array and plain Object of one snapshot, by id."""

    source: str
    ids: npt.NDArray[np.uint32]
    kinds: npt.NDArray[np.uint8]
    counts: npt.NDArray[np.int64]
    #: Every object whose id is in one fixed 1-in-64 subset (the same subset in every
    #: snapshot): id, class name and self size, to tell whether ids are comparable.
    sample_ids: npt.NDArray[np.uint32] = field(default_factory=lambda: np.empty(0, dtype=np.uint32))
    sample_classes: npt.NDArray[np.object_] = field(default_factory=lambda: np.empty(0, dtype=object))
    sample_sizes: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def _sample(
    snapshot: HeapSnapshot,
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    from heapsnap.analysis.views import _class_names

    # V8's ids go up in steps of 2: hash them so that the subset is not one parity.
    mixed = (snapshot.node_id.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    nodes = np.flatnonzero((mixed >> np.uint64(26)) == 0)
    order = np.argsort(snapshot.node_id[nodes], kind="stable")
    nodes = nodes[order]
    return snapshot.node_id[nodes], _class_names(snapshot, nodes), snapshot.self_size[nodes]


def _check_comparable(earlier: CollectionSizes, later: CollectionSizes) -> None:
    """Refuse two snapshots whose ids name different objects, as :func:`.views.find_leaks` does."""
    common, a, b = np.intersect1d(
        earlier.sample_ids, later.sample_ids, assume_unique=True, return_indices=True
    )
    same = int(
        np.count_nonzero(
            (earlier.sample_classes[a] == later.sample_classes[b])
            & (earlier.sample_sizes[a] == later.sample_sizes[b])
        )
    )
    if common.size == 0 or same < 0.98 * common.size:
        raise InvalidInput(
            f"object ids of {earlier.source or 'one snapshot'} and {later.source or 'the next'} are not "
            f"comparable ({same} of {common.size} sampled common ids name objects of the same class and "
            "size): give snapshots of one process taken in one inspector session (a series), oldest first"
        )


def collection_sizes(snapshot: HeapSnapshot) -> CollectionSizes:
    """The element counts the module docstring defines; the snapshot may be dropped after."""
    # Prefix sums over all edges (4 bytes each) rather than gathering each collection's
    # edges: plain Objects can be millions.
    refs = _count_per_node(snapshot, _reference_mask(snapshot))
    elements = _count_per_node(snapshot, snapshot.edge_type == _edge_type(snapshot, "element"))
    ids, kinds, counts = [], [], []
    for number, kind in enumerate(COLLECTION_KINDS):
        nodes = _objects_named(snapshot, kind)
        if kind in ("Map", "Set"):
            values = _table_entries(snapshot, nodes)[0]
        else:
            values = (elements if kind == "Array" else refs)[nodes]
        ids.append(snapshot.node_id[nodes])
        kinds.append(np.full(nodes.size, number, dtype=np.uint8))
        counts.append(values)
    sample_ids, sample_classes, sample_sizes = _sample(snapshot)
    return CollectionSizes(
        source=snapshot.source,
        ids=np.concatenate(ids),
        kinds=np.concatenate(kinds),
        counts=np.concatenate(counts),
        sample_ids=sample_ids,
        sample_classes=sample_classes,
        sample_sizes=sample_sizes,
    )


@dataclass(frozen=True)
class GrowingCollection:
    node_id: int
    kind: str
    counts: list[int]
    retained_size: int
    path: list[PathStep] = field(default_factory=list)

    @property
    def held_by(self) -> str:
        """The path in one line from the root's child, or from the global object if it
        passes one (Node 26 reaches it through the native context): ``global.myLeakyCache``."""
        if len(self.path) < 2:
            return "-"
        start = 1
        for index, step in enumerate(self.path[1:-1], 1):
            if step.class_name.startswith("global"):
                start = index
        head = self.path[start].class_name.split(" ")[0]
        return head + "".join(step.edge for step in self.path[start + 1 :])

    @property
    def growth(self) -> int:
        return self.counts[-1] - self.counts[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "kind": self.kind,
            "counts": self.counts,
            "growth": self.growth,
            "heldBy": self.held_by,
            "retainedSize": self.retained_size,
            "retainerPath": [
                {"edge": step.edge, "className": step.class_name, "id": step.node_id} for step in self.path
            ],
        }


def growing_collections(
    series: list[CollectionSizes],
    final: HeapSnapshot,
    paths: Any,
    retained: npt.NDArray[np.float64] | None = None,
    top: int = 25,
) -> list[GrowingCollection]:
    """Collections present in every snapshot of ``series`` (matched by object id, stable
    within one inspector session) whose element count grew from each snapshot to the next;
    most growth first, each with its shortest retainer path in ``final`` (the last one)."""
    if len(series) < 2:
        raise InvalidInput("growing collections need a series: give 2 or more snapshots of one process")
    for earlier, later in pairwise(series):
        _check_comparable(earlier, later)
    last = series[-1]
    order = np.argsort(last.ids, kind="stable")
    ids, kinds = last.ids[order], last.kinds[order]
    history = [last.counts[order]]
    present = np.ones(ids.size, dtype=bool)
    for earlier in reversed(series[:-1]):
        sort = np.argsort(earlier.ids, kind="stable")
        sorted_ids = earlier.ids[sort]
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(sorted_ids.size - 1, 0))
        found = (sorted_ids[at] == ids) if sorted_ids.size else np.zeros(ids.size, dtype=bool)
        found &= earlier.kinds[sort][at] == kinds if sorted_ids.size else found
        present &= found
        history.insert(0, np.where(found, earlier.counts[sort][at] if sorted_ids.size else 0, 0))
    table = np.stack(history)
    grew = present & np.all(table[1:] > table[:-1], axis=0)
    picked = np.flatnonzero(grew)
    growth = table[-1, picked] - table[0, picked]
    picked = picked[np.argsort(-growth, kind="stable")][:top]
    by_id = final.nodes_by_id()
    sorted_final = final.node_id[by_id]
    rows = []
    for index in picked.tolist():
        node = int(by_id[np.searchsorted(sorted_final, ids[index])])
        rows.append(
            GrowingCollection(
                node_id=int(ids[index]),
                kind=COLLECTION_KINDS[int(kinds[index])],
                counts=[int(c) for c in table[:, index].tolist()],
                retained_size=int(retained[node]) if retained is not None else -1,
                path=paths.path(final, node),
            )
        )
    return rows


# Globals


def _main_global(snapshot: HeapSnapshot) -> int:
    """The program's global object: the root's shortcut target (Node 20-24), or the
    ``{global_object}`` of the native context that is (Node 26)."""
    root = snapshot.root
    shortcut, internal = _edge_type(snapshot, "shortcut"), _edge_type(snapshot, "internal")
    global_object = _name_index(snapshot, "global_object")
    span = slice(int(snapshot.first_edge[root]), int(snapshot.first_edge[root + 1]))
    for target in snapshot.edge_to[span][snapshot.edge_type[span] == shortcut].tolist():
        inner = slice(int(snapshot.first_edge[target]), int(snapshot.first_edge[target + 1]))
        hit = np.flatnonzero(
            (snapshot.edge_type[inner] == internal) & (snapshot.edge_name[inner] == global_object)
        )
        node = int(snapshot.edge_to[inner.start + int(hit[0])]) if hit.size else int(target)
        if snapshot.node_type[node] == snapshot.layout.object_type:
            return node
    raise InvalidInput(
        f"{snapshot.source or 'the snapshot'} has no global object under its root: "
        "give a heap snapshot of a Node.js process"
    )


def _global_properties(snapshot: HeapSnapshot, node: int) -> dict[str, int]:
    """Property name -> edge index; an accessor's ``get x``/``set x`` edges are named ``x``."""
    prop, element = _edge_type(snapshot, "property"), _edge_type(snapshot, "element")
    found: dict[str, int] = {}
    for edge in range(int(snapshot.first_edge[node]), int(snapshot.first_edge[node + 1])):
        kind = int(snapshot.edge_type[edge])
        if kind == element:
            name = f"[{int(snapshot.edge_name[edge])}]"
        elif kind == prop:
            name = snapshot.strings[int(snapshot.edge_name[edge])]
            if name == "__proto__":
                continue
            if name.startswith(("get ", "set ")):
                name = name[4:]
        else:
            continue
        found.setdefault(name, edge)
    return found


def global_names(snapshot: HeapSnapshot) -> set[str]:
    return set(_global_properties(snapshot, _main_global(snapshot)))


def node_version(snapshot: HeapSnapshot) -> str:
    """``process.version`` as the snapshot holds it (``v24.1.0``), or "" if it does not."""
    version = _name_index(snapshot, "version")
    process = _name_index(snapshot, "process")
    if version < 0 or process < 0:
        return ""
    edges = np.flatnonzero(
        (snapshot.edge_name == version) & (snapshot.edge_type == _edge_type(snapshot, "property"))
    )
    holders = np.searchsorted(snapshot.first_edge, edges, side="right") - 1
    edges = edges[snapshot.node_name[holders] == process]
    for edge in edges.tolist():
        text = snapshot.name(int(snapshot.edge_to[edge]))
        if text.startswith("v") and text[1:2].isdigit():
            return text
    return ""


@dataclass(frozen=True)
class AppGlobal:
    name: str
    class_name: str
    node_id: int
    self_size: int
    retained_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "className": self.class_name,
            "id": self.node_id,
            "selfSize": self.self_size,
            "retainedSize": self.retained_size,
        }


@dataclass
class GlobalsReport:
    node_version: str
    baseline: str
    globals: list[AppGlobal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeVersion": self.node_version,
            "baseline": self.baseline,
            "globals": [g.to_dict() for g in self.globals],
        }


def app_globals(
    snapshot: HeapSnapshot, retained: npt.NDArray[np.float64] | None = None, baseline: set[str] | None = None
) -> GlobalsReport:
    """Properties of the global object that a fresh Node.js of the same major does not
    have, largest retained size first. The fresh lists ship in :mod:`._node_globals`
    (written from snapshots of fresh processes; the tests check them against each release
    they run), nor :data:`EVAL_GLOBALS`."""
    from heapsnap.analysis._node_globals import BASELINES

    version = node_version(snapshot)
    if baseline is None:
        major = int(version[1:].split(".")[0]) if version else max(BASELINES)
        shipped = min(BASELINES, key=lambda m: (abs(m - major), -m))
        baseline = set(BASELINES[shipped])
        if not version:
            label = f"Node {shipped} (the snapshot names no process.version)"
        elif shipped != major:
            label = f"Node {shipped} (no list for Node {major}: its own new globals may show)"
        else:
            label = f"Node {shipped}"
    else:
        label = "given"
    baseline = baseline | EVAL_GLOBALS
    holder = _main_global(snapshot)
    rows = []
    for name, edge in _global_properties(snapshot, holder).items():
        if name in baseline:
            continue
        node = int(snapshot.edge_to[edge])
        rows.append(
            AppGlobal(
                name=name,
                class_name=snapshot.class_of(node),
                node_id=int(snapshot.node_id[node]),
                self_size=int(snapshot.self_size[node]),
                retained_size=int(retained[node]) if retained is not None else -1,
            )
        )
    rows.sort(key=lambda g: (-g.retained_size, g.name))
    return GlobalsReport(version, label, rows)


#: Globals Node.js itself gives code run by ``node -e`` and ``eval: true`` workers.
EVAL_GLOBALS = frozenset({"require", "module", "exports", "__filename", "__dirname"})

_FRESH_SCRIPT = "require('v8').writeHeapSnapshot(process.argv[2]);\n"


def fresh_node_globals(node: str = "node") -> tuple[str, set[str]]:
    """(version, global names) of a fresh Node.js running a script file that only writes a
    snapshot: what :data:`._node_globals.BASELINES` holds per major."""
    from heapsnap.analysis.reader import read_snapshot

    with tempfile.TemporaryDirectory(prefix="heapsnap-globals-") as work:
        script, out = Path(work) / "fresh.js", Path(work) / "fresh.heapsnapshot"
        script.write_text(_FRESH_SCRIPT)
        env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
        subprocess.run([node, str(script), str(out)], check=True, timeout=120, env=env, cwd=work)
        snapshot = read_snapshot(out)
    return node_version(snapshot), global_names(snapshot)


# All four, for `heapsnap inspect`


@dataclass
class Inspection:
    sources: list[str]
    strings: list[DuplicateString]
    fan_out: list[FanOut]
    globals: GlobalsReport
    #: None for a single snapshot (growth needs a series).
    growing: list[GrowingCollection] | None
    #: Bytes wasted by every duplicated string, not only the listed ones.
    strings_wasted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.sources,
            "duplicatedStrings": [s.to_dict() for s in self.strings],
            "duplicatedStringsWastedSize": self.strings_wasted,
            "growingCollections": None if self.growing is None else [g.to_dict() for g in self.growing],
            "fanOut": [f.to_dict() for f in self.fan_out],
            "appGlobals": self.globals.to_dict(),
        }


def inspect(sources: list[str], load: Any, top: int = 25) -> tuple[Inspection, Any]:
    """The heuristics over ``sources`` (one snapshot, or a series of one process, oldest
    first); ``load(source)`` reads one with its edges. Earlier snapshots of a series are
    reduced to their collection sizes and dropped: one snapshot in memory at a time.
    Returns the inspection and the last snapshot's :class:`~.views.Analysis`."""
    from heapsnap.analysis.views import analyze

    if not sources:
        raise InvalidInput("give one snapshot, or 2 or more snapshots of one process (a series)")
    sizes = []
    for source in sources[:-1]:
        sizes.append(collection_sizes(load(source)))
    analysis = analyze(load(sources[-1]))
    final = analysis.snapshot
    retained = analysis.dominators.retained
    growing = None
    if sizes:
        sizes.append(collection_sizes(final))
        growing = growing_collections(sizes, final, analysis.paths, retained, top)
    strings, wasted = string_duplicates(final, top)
    result = Inspection(
        sources=list(sources),
        strings=strings,
        strings_wasted=wasted,
        fan_out=top_fan_out(final, top, retained),
        globals=app_globals(final, retained),
        growing=growing,
    )
    return result, analysis
