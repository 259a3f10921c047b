"""Streaming summary of a heap snapshot, computed while its bytes pass (placeholder).

Interface used by the capture engine; the analysis area implements it:

    summary = StreamingSummary(top=20)
    summary.feed(chunk)        # any split, even mid-token; bytes of the snapshot JSON
    result = summary.finish()  # raises SnapshotFormatError when the text was incomplete
    result.to_dict()           # JSON-ready, for status and --json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConstructorStat:
    name: str
    count: int
    self_size: int


@dataclass
class SnapshotSummary:
    node_count: int
    edge_count: int
    total_self_size: int
    node_fields: list[str]
    top_by_size: list[ConstructorStat] = field(default_factory=list)
    top_by_count: list[ConstructorStat] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class StreamingSummary:
    def __init__(self, top: int = 20) -> None:
        self.top = top

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> SnapshotSummary:
        raise NotImplementedError
