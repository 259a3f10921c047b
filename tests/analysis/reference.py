"""A deliberately naive reading of a snapshot with json.load: the oracle for small files."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from heapsnap.analysis.layout import class_name


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        data: dict[str, Any] = json.load(file)
    return data


def summary(data: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Count and self size per DevTools class, nodes of size 0 left out unless native."""
    meta = data["snapshot"]["meta"]
    fields = meta["node_fields"]
    width = len(fields)
    type_at, name_at, size_at = fields.index("type"), fields.index("name"), fields.index("self_size")
    types = meta["node_types"][type_at]
    nodes, strings = data["nodes"], data["strings"]
    classes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for base in range(0, len(nodes), width):
        node_type, size = types[nodes[base + type_at]], nodes[base + size_at]
        if size == 0 and node_type != "native":
            continue
        entry = classes[class_name(node_type, strings[nodes[base + name_at]])]
        entry[0] += 1
        entry[1] += size
    return {name: (count, size) for name, (count, size) in classes.items()}


def devtools_dominators(data: dict[str, Any], *, lazy: bool = False) -> tuple[dict[int, int], list[int]]:
    """Immediate dominators by the textbook iterative algorithm over DevTools' edge rules.

    Written independently of heapsnap's compiled loops (dicts and lists, no post-order
    tricks): an edge counts unless it is weak, a shortcut from a node other than the root,
    or leads from a non-page object into a page object (page objects: reachable from the
    root's shortcut edges). Returns the dominators of the nodes reachable through such
    edges, and their self sizes. ``lazy`` re-examines a node only after one of its holders
    got a new dominator, as DevTools does, which can stop short of the fixpoint.
    """
    meta = data["snapshot"]["meta"]
    fields = meta["node_fields"]
    width = len(fields)
    edge_types = meta["edge_types"][0]
    weak, shortcut = edge_types.index("weak"), edge_types.index("shortcut")
    nodes, edges = data["nodes"], data["edges"]
    count = len(nodes) // width
    sizes = nodes[fields.index("self_size") :: width]
    out: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    at = 0
    for node in range(count):
        for _ in range(nodes[node * width + fields.index("edge_count")]):
            out[node].append((edges[at], edges[at + 2] // width))
            at += 3
    page = [False] * count
    stack = [to for kind, to in out[0] if kind == shortcut]
    for to in stack:
        page[to] = True
    while stack:
        node = stack.pop()
        for kind, to in out[node]:
            if kind != weak and not page[to]:
                page[to] = True
                stack.append(to)

    def kept(source: int, kind: int, target: int) -> bool:
        if kind == weak or (kind == shortcut and source != 0):
            return False
        return source == 0 or not page[target] or page[source]

    graph = [[to for kind, to in out[node] if kept(node, kind, to)] for node in range(count)]
    order: list[int] = []
    seen = [False] * count
    seen[0] = True
    walk = [(0, iter(graph[0]))]
    while walk:
        node, children = walk[-1]
        for child in children:
            if not seen[child]:
                seen[child] = True
                walk.append((child, iter(graph[child])))
                break
        else:
            order.append(node)
            walk.pop()
    rank = {node: i for i, node in enumerate(order)}
    preds: dict[int, list[int]] = {node: [] for node in order}
    for node in order:
        for child in graph[node]:
            preds[child].append(node)
    idom = {0: 0}
    # DevTools re-examines a node only after one of its holders got a new dominator.
    affected = {to for kind, to in out[0] if kind != weak} if lazy else set(order)
    changed = True
    while changed:
        changed = False
        for node in reversed(order[:-1]):
            if node not in affected:
                continue
            if lazy:
                affected.discard(node)
                if idom.get(node) == 0:
                    continue
            ready = [p for p in preds[node] if p in idom]
            new = ready[0]
            for other in ready[1:]:
                a, b = other, new
                while a != b:
                    while rank[a] < rank[b]:
                        a = idom[a]
                    while rank[b] < rank[a]:
                        b = idom[b]
                new = a
            if idom.get(node) != new:
                idom[node] = new
                changed = True
                affected.update(to for _, to in out[node])
    return idom, sizes


def retained_from(idom: dict[int, int], sizes: list[int]) -> dict[int, int]:
    """Retained size of each node: its self size plus that of everything it dominates."""
    children: dict[int, list[int]] = {}
    for node, parent in idom.items():
        if node != parent:
            children.setdefault(parent, []).append(node)
    retained: dict[int, int] = {}
    stack = [(0, False)]
    while stack:
        node, done = stack.pop()
        if done:
            retained[node] = sizes[node] + sum(retained[c] for c in children.get(node, []))
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children.get(node, []))
    return retained
