"""Capture engines: take a heap snapshot through a ``ProcessHost``; no Kubernetes here.

``capture()`` picks the process, chooses the inspector or the snapshot signal, checks
the memory headroom, and streams the snapshot into a ``Sink`` while a summary is
computed from the same bytes. ``sample_allocations()`` runs V8's sampling heap
profiler through an inspector session opened the same way, to find which code allocated
what stays alive. Target-side work is done by ``agent.js``, run by the target's own
Node.js binary through ``ProcessHost.run``, so a pod needs no shell.

The modules, by job:

- ``_session``: the capture session (host, agent, process, options, progress reporter)
  and its open inspector (``Inspection``); choosing the process;
- ``_targets``: the thread captured (main thread or a worker);
- ``_transfers``: how the snapshot leaves the process (stream, tempfile, signal);
- ``_pump``: the byte pump each transfer feeds (batches, summary, sink, progress);
- ``_capture``: one snapshot, by the method chosen; ``_series``: a series, sampling;
- ``_agent`` and ``agent.js``: the target-side agent; ``_inspector`` and ``_cdp``: the
  inspector; ``_preflight``: the memory estimate; ``_summary``: the summary's thread.
"""

from heapsnap.engine._capture import capture, capture_inspector, close_inspector, select_process
from heapsnap.engine._series import capture_series, sample_allocations
from heapsnap.engine._types import (
    AllocationProfile,
    AllocationSite,
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
