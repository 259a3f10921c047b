"""The engine's public value types."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from heapsnap.sinks.base import Artifact

if TYPE_CHECKING:
    from heapsnap.analysis.stream import SnapshotSummary

Method = Literal["auto", "inspector", "signal"]
PreflightMode = Literal["enforce", "warn", "skip"]
Transfer = Literal["auto", "stream", "tempfile"]


@dataclass(frozen=True)
class ProcessSelector:
    """Which Node.js process to capture.

    Neither field set means the main Node process: pid 1 if it is node, else the only
    node process, else ``AmbiguousProcess``.
    """

    pid: int | None = None
    command_contains: str | None = None


@dataclass(frozen=True)
class CaptureOptions:
    """How to capture.

    ``available_bytes`` overrides the memory headroom the preflight measures (a limit
    the probe cannot see, or tests).

    ``transfer`` is how an inspector capture leaves the process: ``stream`` as
    inspector protocol chunks (nothing written in the target); ``tempfile`` written by V8
    to a temporary file next to the target, deleted at once and read while it grows (the
    speed of ``writeHeapSnapshot``, no extra memory in the target, but disk space for
    the snapshot there); ``auto`` takes ``tempfile`` where a writable, disk-backed
    directory has room for it, else ``stream``.
    """

    method: Method = "auto"
    inspector_port: int = 9229
    preflight: PreflightMode = "enforce"
    timeout_seconds: float | None = None
    summary_top: int = 20
    available_bytes: int | None = None
    transfer: Transfer = "auto"
    # The threadId of a worker_threads Worker to capture instead of the main thread
    # (inspector method only: the snapshot signal captures the main thread).
    worker: int | None = None
    # Store the snapshot with the target's string contents replaced (heapsnap.analysis.redact).
    redact: bool = False


@dataclass(frozen=True)
class Progress:
    """One step of a capture. Phases, in order: probing, preflight, activating,
    signalling, generating (``percent``), transferring (``bytes_sent``), done."""

    phase: str
    percent: float | None = None
    bytes_sent: int = 0
    message: str = ""
    # Set once heapsnap has opened the target's inspector: what to close after a crash.
    inspector_port: int | None = None
    pid: int | None = None


ProgressCallback = Callable[[Progress], Awaitable[None]]


@dataclass
class TargetInfo:
    pid: int
    node_version: str
    command: str
    method: Literal["inspector", "signal"]
    inspector_opened: bool = False
    # How the bytes left the process: inspector protocol chunks, or a followed file.
    transfer: Literal["stream", "tempfile"] = "stream"
    worker: int | None = None  # the worker thread captured, by threadId; None: the main thread


@dataclass
class PreflightEstimate:
    node_count: int
    estimated_bytes: int
    available_bytes: int | None
    estimated_pause_seconds: float
    source: dict[str, str] = field(default_factory=dict)


@dataclass
class AllocationSite:
    """One function's allocations still alive; ``line`` and ``column`` count from 1."""

    function: str
    url: str
    line: int
    column: int
    live_bytes: int
    samples: int
    #: Its heaviest caller chain, innermost first: ``function (url:line)``.
    callers: list[str] = field(default_factory=list)

    @property
    def location(self) -> str:
        return f"{self.url}:{self.line}:{self.column}" if self.url else "(native or V8)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "url": self.url,
            "line": self.line,
            "column": self.column,
            "liveBytes": self.live_bytes,
            "samples": self.samples,
            "callers": self.callers,
        }


@dataclass
class AllocationProfile:
    target: TargetInfo
    seconds: float
    interval_bytes: int
    collected_garbage: bool
    live_bytes: int
    sites: list[AllocationSite]
    #: The profile as V8 gave it: ``{"head": ..., "samples": [...]}`` (DevTools' ``.heapprofile``).
    profile: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": dataclasses.asdict(self.target),
            "seconds": self.seconds,
            "intervalBytes": self.interval_bytes,
            "collectedGarbage": self.collected_garbage,
            "liveBytes": self.live_bytes,
            "sites": [site.to_dict() for site in self.sites],
            "warnings": self.warnings,
        }


@dataclass
class CaptureResult:
    target: TargetInfo
    artifact: Artifact
    pause_seconds: float
    transfer_seconds: float
    total_seconds: float
    summary: SnapshotSummary | None
    preflight: PreflightEstimate | None
    warnings: list[str] = field(default_factory=list)
    # A series' last snapshot, when its allocations were sampled from the first one.
    allocations: AllocationProfile | None = None
    # The stored snapshot's string contents were replaced (``CaptureOptions.redact``).
    redacted: bool = False
