"""Capture engines: take a heap snapshot through a ``ProcessHost``; no Kubernetes here.

``capture()`` picks the process, chooses the inspector or the snapshot signal, checks
the memory headroom, and streams the snapshot into a ``Sink`` while a summary is
computed from the same bytes. ``sample_allocations()`` runs V8's sampling heap
profiler through an inspector session opened the same way, to find which code allocated
what stays alive. Target-side work is done by ``agent.js``, run by the target's own
Node.js binary through ``ProcessHost.run``, so a pod needs no shell.
"""

from heapsnap.engine._capture import (
    capture,
    capture_inspector,
    capture_series,
    close_inspector,
    sample_allocations,
    select_process,
)
from heapsnap.engine._sampling import AllocationProfile, AllocationSite
from heapsnap.engine._types import (
    CaptureOptions,
    CaptureResult,
    Method,
    PreflightEstimate,
    PreflightMode,
    ProcessSelector,
    Progress,
    ProgressCallback,
    TargetInfo,
    Transfer,
)

__all__ = [
    "AllocationProfile",
    "AllocationSite",
    "CaptureOptions",
    "CaptureResult",
    "Method",
    "PreflightEstimate",
    "PreflightMode",
    "ProcessSelector",
    "Progress",
    "ProgressCallback",
    "TargetInfo",
    "Transfer",
    "capture",
    "capture_inspector",
    "capture_series",
    "close_inspector",
    "sample_allocations",
    "select_process",
]
