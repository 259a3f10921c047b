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
