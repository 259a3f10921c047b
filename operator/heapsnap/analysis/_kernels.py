"""Compiled loops (numba) for what numpy cannot vectorize: depth-first orders and the
dominator fixpoint, and scattering parsed numbers into the reader's columns.

Kept apart so that importing :mod:`heapsnap.analysis.stream` (the capture path, whose
RSS budget is small) never imports numba. Compiled code is cached on disk; the cache
goes to ``$NUMBA_CACHE_DIR``, else ``$HEAPSNAP_CACHE/numba``, so read-only installs work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast


def _cache_dir() -> str:
    base = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap")) / "numba"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return str(base)
    except OSError:
        pass
    return str(Path(tempfile.gettempdir()) / "heapsnap-numba")


os.environ.setdefault("NUMBA_CACHE_DIR", _cache_dir())

import numba  # noqa: E402
import numpy as np  # noqa: E402

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(function: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True, boundscheck=False)(function))


@_jit
def essential_retainers(
    first_edge: Any, edge_to: Any, edge_type: Any, root: int, shortcut: int, weak: int, first: Any
) -> Any:  # pragma: no cover - compiled
    """Reverse adjacency over essential edges: ``first`` (zeroed, one longer than the
    nodes) gets the offsets; returns the holders. Each node's holders are listed last
    edge first, the order in which DevTools' ``_buildRetainers`` leaves them."""
    node_count = first_edge.size - 1
    for node in range(node_count):
        for e in range(first_edge[node], first_edge[node + 1]):
            kind = edge_type[e]
            if kind == weak or (kind == shortcut and node != root):
                continue
            first[edge_to[e] + 1] += 1
    for i in range(node_count):
        first[i + 1] += first[i]
    holders = np.empty(first[node_count], dtype=np.uint32)
    for i in range(node_count):
        first[i] = first[i + 1]
    for node in range(node_count):
        for e in range(first_edge[node], first_edge[node + 1]):
            kind = edge_type[e]
            if kind == weak or (kind == shortcut and node != root):
                continue
            to = edge_to[e]
            first[to] -= 1
            holders[first[to]] = node
    return holders


@_jit
def page_owned(
    first_edge: Any,
    edge_to: Any,
    edge_type: Any,
    root: int,
    shortcut: int,
    element: int,
    weak: int,
    dom_trees_root: Any,
) -> Any:  # pragma: no cover - compiled
    """DevTools' pageObject flag: reachable (no weak edges) from the root's user globals."""
    node_count = first_edge.size - 1
    flags = np.zeros(node_count, dtype=np.uint8)
    stack = np.empty(node_count, dtype=np.uint32)
    top = 0
    for e in range(first_edge[root], first_edge[root + 1]):
        to = edge_to[e]
        kind = edge_type[e]
        if kind == element:
            if not dom_trees_root[to]:
                continue
        elif kind != shortcut:
            continue
        if flags[to] == 0:
            flags[to] = 1
            stack[top] = to
            top += 1
    while top > 0:
        top -= 1
        node = stack[top]
        for e in range(first_edge[node], first_edge[node + 1]):
            to = edge_to[e]
            if flags[to] or edge_type[e] == weak:
                continue
            flags[to] = 1
            stack[top] = to
            top += 1
    return flags


@_jit
def post_order(
    first_edge: Any,
    edge_to: Any,
    edge_type: Any,
    root: int,
    shortcut: int,
    weak: int,
    flags: Any,
    only_weak_retained: Any,
) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """DevTools' ``buildPostOrderIndex``: DFS over essential edges, then orphans."""
    node_count = first_edge.size - 1
    stack_node = np.empty(node_count, dtype=np.uint32)
    stack_edge = np.empty(node_count, dtype=np.int64)
    order = np.empty(node_count, dtype=np.uint32)
    rank = np.empty(node_count, dtype=np.uint32)
    visited = np.zeros(node_count, dtype=np.uint8)
    index = 0
    top = 0
    stack_node[0] = root
    stack_edge[0] = first_edge[root]
    visited[root] = 1
    iteration = 0
    while True:
        iteration += 1
        while top >= 0:
            node = stack_node[top]
            e = stack_edge[top]
            if e < first_edge[node + 1]:
                stack_edge[top] = e + 1
                kind = edge_type[e]
                if kind == weak or (kind == shortcut and node != root):
                    continue
                child = edge_to[e]
                if visited[child]:
                    continue
                if node != root and flags[child] and not flags[node]:
                    continue
                top += 1
                stack_node[top] = child
                stack_edge[top] = first_edge[child]
                visited[child] = 1
            else:
                rank[node] = index
                order[index] = node
                index += 1
                top -= 1
        if index == node_count or iteration > 1:
            break
        # Nodes held only by weak or shortcut edges: walk their subgraphs, root last.
        index -= 1
        top = 0
        stack_node[0] = root
        stack_edge[0] = first_edge[root + 1]
        for i in range(node_count):
            if visited[i] or not only_weak_retained[i]:
                continue
            top += 1
            stack_node[top] = i
            stack_edge[top] = first_edge[i]
            visited[i] = 1
    if index != node_count:
        index -= 1
        for i in range(node_count):
            if visited[i]:
                continue
            rank[i] = index
            order[index] = i
            index += 1
        rank[root] = index
        order[index] = root
        index += 1
    return order, rank


@_jit
def dominators(
    order: Any,
    rank: Any,
    first_edge: Any,
    edge_to: Any,
    edge_type: Any,
    ret_first: Any,
    ret_src: Any,
    root: int,
    weak: int,
    flags: Any,
) -> Any:  # pragma: no cover - compiled
    """Cooper, Harvey and Kennedy's iterative algorithm exactly as DevTools runs it.

    Returns the immediate dominator of each node (by node ordinal); the root's is itself.
    """
    count = order.size
    root_po = count - 1
    no_entry = count
    dom = np.full(count, no_entry, dtype=np.uint32)
    dom[root_po] = root_po
    affected = np.zeros(count, dtype=np.uint8)
    for e in range(first_edge[root], first_edge[root + 1]):
        kind = edge_type[e]
        if kind == weak:
            continue
        affected[rank[edge_to[e]]] = 1
    changed = True
    while changed:
        changed = False
        for po in range(root_po - 1, -1, -1):
            if affected[po] == 0:
                continue
            affected[po] = 0
            if dom[po] == root_po:
                continue
            node = order[po]
            node_flag = flags[node]
            new_dom = no_entry
            orphan = True
            for r in range(ret_first[node], ret_first[node + 1]):
                holder = ret_src[r]
                orphan = False
                if holder != root and node_flag and not flags[holder]:
                    continue
                holder_po = rank[holder]
                if dom[holder_po] != no_entry:
                    if new_dom == no_entry:
                        new_dom = holder_po
                    else:
                        while holder_po != new_dom:
                            while holder_po < new_dom:
                                holder_po = dom[holder_po]
                            while new_dom < holder_po:
                                new_dom = dom[new_dom]
                    if new_dom == root_po:
                        break
            if orphan:
                new_dom = root_po
            if new_dom != no_entry and dom[po] != new_dom:
                dom[po] = new_dom
                changed = True
                for e in range(first_edge[node], first_edge[node + 1]):
                    affected[rank[edge_to[e]]] = 1
    idom = np.empty(count, dtype=np.uint32)
    for po in range(count):
        # A node no retainer ever reached keeps no entry; DevTools' typed array turns the
        # resulting undefined into 0, the root: do the same explicitly.
        idom[order[po]] = order[dom[po]] if dom[po] != no_entry else root
    return idom


@_jit
def retained_sizes(order: Any, idom: Any, self_size: Any) -> Any:  # pragma: no cover - compiled
    retained = self_size.astype(np.float64)
    for po in range(order.size - 1):
        node = order[po]
        retained[idom[node]] += retained[node]
    return retained


@_jit
def bfs(
    first_edge: Any,
    edge_to: Any,
    edge_type: Any,
    starts: Any,
    weak: int,
    distance: Any,
    parent_edge: Any,
    first_distance: int,
) -> None:  # pragma: no cover - compiled
    """Breadth-first from ``starts`` skipping weak edges; fills unset distances and parents."""
    queue = np.empty(distance.size, dtype=np.uint32)
    length = 0
    for s in starts:
        if distance[s] < 0:
            distance[s] = first_distance
            queue[length] = s
            length += 1
    head = 0
    while head < length:
        node = queue[head]
        head += 1
        next_distance = distance[node] + 1
        for e in range(first_edge[node], first_edge[node + 1]):
            if edge_type[e] == weak:
                continue
            child = edge_to[e]
            if distance[child] >= 0:
                continue
            distance[child] = next_distance
            parent_edge[child] = e
            queue[length] = child
            length += 1


@_jit
def class_retained(
    dom_first: Any, dom_children: Any, root: int, class_key: Any, shown: Any, retained: Any, class_count: int
) -> Any:  # pragma: no cover - compiled
    """DevTools' class retained size: only instances not dominated by one of their class."""
    total = np.zeros(class_count, dtype=np.float64)
    seen = np.zeros(class_count, dtype=np.uint8)
    node_count = dom_first.size - 1
    # Iterative pre-order walk of the dominator tree with an exit marker per node.
    stack = np.empty(2 * node_count + 2, dtype=np.int64)
    top = 0
    stack[0] = root
    while top >= 0:
        item = stack[top]
        top -= 1
        if item < 0:
            seen[class_key[-1 - item]] = 0
            continue
        node = item
        key = class_key[node]
        marked = False
        if not seen[key] and shown[node]:
            total[key] += retained[node]
            if dom_first[node] != dom_first[node + 1]:
                seen[key] = 1
                marked = True
        if marked:
            top += 1
            stack[top] = -1 - node
        for i in range(dom_first[node], dom_first[node + 1]):
            top += 1
            stack[top] = dom_children[i]
    return total


@_jit
def scatter_nodes(
    values: Any,
    phase: int,
    row: int,
    fields: Any,
    types: Any,
    names: Any,
    ids: Any,
    sizes: Any,
    edge_counts: Any,
    type_limit: int,
) -> tuple[int, int, int]:  # pragma: no cover
    """Spread flat node numbers over the columns; ``fields`` maps each field to a column
    (0 type, 1 name, 2 id, 3 self_size, 4 edge_count, -1 unused). Returns (row, phase, error)."""
    width = fields.size
    for k in range(values.size):
        v = values[k]
        column = fields[phase]
        if column == 0:
            if v >= type_limit:
                return row, phase, 1
            types[row] = v
        elif column == 1:
            names[row] = v
        elif column == 2:
            if v > 0xFFFFFFFF:
                return row, phase, 2
            ids[row] = v
        elif column == 3:
            sizes[row] = v
        elif column == 4:
            edge_counts[row] = v
        phase += 1
        if phase == width:
            phase = 0
            row += 1
    return row, phase, 0


@_jit
def scatter_edges(
    values: Any,
    phase: int,
    row: int,
    fields: Any,
    node_width: int,
    node_limit: int,
    types: Any,
    names: Any,
    targets: Any,
) -> tuple[int, int, int]:  # pragma: no cover
    """Like :func:`scatter_nodes` for edges (0 type, 1 name_or_index, 2 to_node)."""
    width = fields.size
    for k in range(values.size):
        v = values[k]
        column = fields[phase]
        if column == 0:
            types[row] = v
        elif column == 1:
            names[row] = v
        elif column == 2:
            if v % node_width != 0:
                return row, phase, 1
            if v // node_width >= node_limit:
                return row, phase, 2
            targets[row] = v // node_width
        phase += 1
        if phase == width:
            phase = 0
            row += 1
    return row, phase, 0


@_jit
def dominated(idom: Any, root: int) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """Children of each node in the dominator tree, as offsets and a flat list."""
    count = idom.size
    first = np.zeros(count + 1, dtype=np.int64)
    for node in range(count):
        if node != root:
            first[idom[node] + 1] += 1
    for i in range(count):
        first[i + 1] += first[i]
    fill = first[:-1].copy()
    children = np.empty(max(count - 1, 0), dtype=np.uint32)
    for node in range(count):
        if node != root:
            parent = idom[node]
            children[fill[parent]] = node
            fill[parent] += 1
    return first, children


@_jit
def only_weak_retained(
    edge_to: Any, edge_type: Any, node_count: int, weak: int, shortcut: int
) -> Any:  # pragma: no cover - compiled
    """1 for nodes held by no edge other than weak and shortcut ones (DevTools' orphans)."""
    only = np.ones(node_count, dtype=np.uint8)
    for e in range(edge_to.size):
        kind = edge_type[e]
        if kind != weak and kind != shortcut:
            only[edge_to[e]] = 0
    return only
