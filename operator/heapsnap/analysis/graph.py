"""Graph analyses over a :class:`HeapSnapshot`, as Chrome DevTools defines them.

``front_end/entrypoints/heap_snapshot_worker/HeapSnapshot.ts`` is the reference:
dominators by Cooper, Harvey and Kennedy over "essential" edges (no weak edges,
shortcut edges only from the root, no edge from a non-page object into a page object),
retained sizes summed in post-order, distances breadth-first from the user roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.analysis import _kernels
from heapsnap.analysis.reader import HeapSnapshot

__all__ = ["SYSTEM_DISTANCE", "Dominators", "PathStep", "ShortestPaths", "dominators", "shortest_paths"]

#: DevTools adds this to the distance of objects reachable only through system roots.
SYSTEM_DISTANCE = 100_000_000


@dataclass(eq=False)
class Dominators:
    idom: npt.NDArray[np.uint32]
    retained: npt.NDArray[np.float64]
    order: npt.NDArray[np.uint32]

    def children(self, root: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
        first, children = _kernels.dominated(self.idom, root)
        return first, children


def _edge_type(snapshot: HeapSnapshot, name: str) -> int:
    # A type a snapshot does not declare can match no edge: 255 is never a valid index.
    index = snapshot.layout.edge_type_index(name)
    return index if index >= 0 else 255


def _offset_type(count: int) -> type[np.unsignedinteger[Any]]:
    return np.uint32 if count < 2**32 else np.uint64


def _require_edges(snapshot: HeapSnapshot) -> None:
    if not snapshot.edges_loaded:
        raise ValueError("this analysis needs the edges: read the snapshot with edges=True")


def dominators(snapshot: HeapSnapshot) -> Dominators:
    """Immediate dominators, post-order and retained sizes of every node."""
    _require_edges(snapshot)
    root = snapshot.root
    weak, shortcut, element = (_edge_type(snapshot, n) for n in ("weak", "shortcut", "element"))
    first_edge, edge_to, edge_type = snapshot.first_edge, snapshot.edge_to, snapshot.edge_type
    dom_trees_name = snapshot.strings.index_of("(Document DOM trees)")
    synthetic = snapshot.layout.node_type_index("synthetic")
    dom_trees = (snapshot.node_type == synthetic) & (snapshot.node_name == dom_trees_name)
    flags = _kernels.page_owned(first_edge, edge_to, edge_type, root, shortcut, element, weak, dom_trees)
    del dom_trees
    only_weak = _kernels.only_weak_retained(edge_to, edge_type, snapshot.node_count, weak, shortcut)
    order, rank = _kernels.post_order(first_edge, edge_to, edge_type, root, shortcut, weak, flags, only_weak)
    del only_weak
    ret_first = np.zeros(snapshot.node_count + 1, dtype=_offset_type(snapshot.edge_count))
    ret_src = _kernels.essential_retainers(first_edge, edge_to, edge_type, root, shortcut, weak, ret_first)
    idom = _kernels.dominators(
        order, rank, first_edge, edge_to, edge_type, ret_first, ret_src, root, weak, flags
    )
    del ret_first, ret_src, rank, flags
    retained = _kernels.retained_sizes(order, idom, snapshot.self_size)
    return Dominators(idom=idom, retained=retained, order=order)


@dataclass(frozen=True)
class PathStep:
    """One hop of a retainer path: ``holder`` reaches the next node through ``edge``."""

    node: int
    node_id: int
    class_name: str
    edge: str


@dataclass(eq=False)
class ShortestPaths:
    distance: npt.NDArray[np.int32]
    parent_edge: npt.NDArray[np.int64]

    def path(self, snapshot: HeapSnapshot, node: int, limit: int = 64) -> list[PathStep]:
        """The shortest retainer path to ``node``, root first; each step names the edge into it."""
        steps: list[PathStep] = []
        current = node
        while True:
            edge = int(self.parent_edge[current])
            label = snapshot.edge_label(edge) if edge >= 0 else ""
            name = "(root)" if current == snapshot.root else snapshot.class_of(current)
            steps.append(PathStep(current, int(snapshot.node_id[current]), name, label))
            if edge < 0 or len(steps) >= limit:
                break
            current = int(np.searchsorted(snapshot.first_edge, edge, side="right")) - 1
        steps.reverse()
        return steps


def shortest_paths(snapshot: HeapSnapshot) -> ShortestPaths:
    """Distances and parent edges, breadth-first from the user roots then the system roots."""
    _require_edges(snapshot)
    root = snapshot.root
    weak = _edge_type(snapshot, "weak")
    first_edge, edge_to, edge_type = snapshot.first_edge, snapshot.edge_to, snapshot.edge_type
    distance = np.full(snapshot.node_count, -1, dtype=np.int32)
    parent = np.full(snapshot.node_count, -1, dtype=np.int64)
    synthetic = snapshot.layout.node_type_index("synthetic")
    root_children = edge_to[first_edge[root] : first_edge[root + 1]]
    user_roots = root_children[snapshot.node_type[root_children] != synthetic]
    # Parent of a user root is its edge from the root.
    for offset, child in enumerate(root_children.tolist()):
        if snapshot.node_type[child] != synthetic and parent[child] < 0:
            parent[child] = int(first_edge[root]) + offset
    distance[root] = 0
    _kernels.bfs(first_edge, edge_to, edge_type, user_roots.astype(np.uint32), weak, distance, parent, 1)
    distance[root] = -1
    _kernels.bfs(
        first_edge,
        edge_to,
        edge_type,
        np.array([root], dtype=np.uint32),
        weak,
        distance,
        parent,
        SYSTEM_DISTANCE if user_roots.size else 0,
    )
    return ShortestPaths(distance=distance, parent_edge=parent)
