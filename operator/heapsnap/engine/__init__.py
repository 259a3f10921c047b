"""Capture engines: take a heap snapshot through a ``ProcessHost``; no Kubernetes here.

``capture()`` picks the process, chooses the inspector or the snapshot signal, checks
the memory headroom, and streams the snapshot into a ``Sink`` while a summary is
computed from the same bytes. Target-side work is done by ``agent.js``, run by the
target's own Node.js binary through ``ProcessHost.run``, so a pod needs no shell.
"""

from heapsnap.engine._capture import (
    capture,
    capture_inspector,
    capture_series,
    close_inspector,
    select_process,
)
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
    "select_process",
]
