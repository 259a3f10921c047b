"""The field layout a snapshot declares in ``snapshot.meta``, and DevTools' class names.

Node 20 and 22 write 7 node fields, Node 24+ writes 6 (no ``trace_node_id``), so every
offset is looked up by name; only the fields analysis needs are required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from heapsnap.errors import SnapshotFormatError

__all__ = ["REQUIRED_EDGE_FIELDS", "REQUIRED_NODE_FIELDS", "NodeLayout", "class_name"]

REQUIRED_NODE_FIELDS = ("type", "name", "id", "self_size", "edge_count")
REQUIRED_EDGE_FIELDS = ("type", "name_or_index", "to_node")


def class_name(node_type: str, name: str) -> str:
    """The Summary group of a node, as ``JSHeapSnapshotNode.className()`` in DevTools."""
    if node_type == "hidden":
        return "(system)"
    if node_type in ("object", "native"):
        return name
    if node_type == "code":
        return "(compiled code)"
    return f"({node_type})"


@dataclass(frozen=True)
class NodeLayout:
    node_fields: tuple[str, ...]
    node_types: tuple[str, ...]
    edge_fields: tuple[str, ...]
    edge_types: tuple[str, ...]
    type: int
    name: int
    id: int
    self_size: int
    edge_count: int
    detachedness: int
    edge_type: int
    edge_name: int
    edge_to: int

    @property
    def field_count(self) -> int:
        return len(self.node_fields)

    @property
    def edge_field_count(self) -> int:
        return len(self.edge_fields)

    @property
    def native_type(self) -> int:
        return self.node_type_index("native")

    @property
    def object_type(self) -> int:
        return self.node_type_index("object")

    def node_type_index(self, name: str) -> int:
        return self.node_types.index(name) if name in self.node_types else -1

    def edge_type_index(self, name: str) -> int:
        return self.edge_types.index(name) if name in self.edge_types else -1

    @staticmethod
    def required(layout: NodeLayout | None) -> NodeLayout:
        """The layout read so far, or the error for numbers that came before any header."""
        if layout is None:
            raise SnapshotFormatError(
                "the heap snapshot has no 'snapshot' member with 'meta' before its nodes: "
                "the file is not a V8 heap snapshot"
            )
        return layout

    @classmethod
    def from_header(cls, snapshot: dict[str, Any]) -> NodeLayout:
        meta = snapshot.get("meta")
        if not isinstance(meta, dict):
            raise SnapshotFormatError(
                "the heap snapshot has no 'snapshot.meta' object: the file is not a V8 heap snapshot"
            )
        node_fields = _names(meta, "node_fields")
        edge_fields = _names(meta, "edge_fields")
        for wanted, have, key in (
            (REQUIRED_NODE_FIELDS, node_fields, "node_fields"),
            (REQUIRED_EDGE_FIELDS, edge_fields, "edge_fields"),
        ):
            missing = [name for name in wanted if name not in have]
            if missing:
                raise SnapshotFormatError(
                    f"unsupported heap snapshot layout: 'snapshot.meta.{key}' is {list(have)} and lacks "
                    f"{', '.join(missing)}; heapsnap reads snapshots whose {key} include {list(wanted)}"
                )
        node_types = _enum(meta, "node_types", node_fields.index("type"))
        edge_types = _enum(meta, "edge_types", edge_fields.index("type"))
        return cls(
            node_fields=node_fields,
            node_types=node_types,
            edge_fields=edge_fields,
            edge_types=edge_types,
            type=node_fields.index("type"),
            name=node_fields.index("name"),
            id=node_fields.index("id"),
            self_size=node_fields.index("self_size"),
            edge_count=node_fields.index("edge_count"),
            detachedness=node_fields.index("detachedness") if "detachedness" in node_fields else -1,
            edge_type=edge_fields.index("type"),
            edge_name=edge_fields.index("name_or_index"),
            edge_to=edge_fields.index("to_node"),
        )

    def class_keys(self, types: npt.NDArray[Any], names: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """DevTools' ``classIndex()``: the name index for object and native nodes, else ``-1 - type``."""
        named = (types == self.object_type) | (types == self.native_type)
        keys: npt.NDArray[np.int64] = np.where(named, names, -1 - types.astype(np.int64)).astype(np.int64)
        return keys


def _names(meta: dict[str, Any], key: str) -> tuple[str, ...]:
    value = meta.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SnapshotFormatError(
            f"unsupported heap snapshot layout: 'snapshot.meta.{key}' is missing or not a list of names"
        )
    return tuple(value)


def _enum(meta: dict[str, Any], key: str, offset: int) -> tuple[str, ...]:
    value = meta.get(key)
    if not isinstance(value, list) or len(value) <= offset or not isinstance(value[offset], list):
        raise SnapshotFormatError(
            f"unsupported heap snapshot layout: 'snapshot.meta.{key}[{offset}]' is not the list of type names"
        )
    return tuple(str(item) for item in value[offset])
