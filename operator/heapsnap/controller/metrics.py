"""Prometheus metrics of the operator, served at ``/metrics`` beside ``/healthz``.

Labels stay few (namespace, outcome, reason), so the number of series stays bounded
however many HeapSnapshots there are; each resource's own figures are on its status.
Counters start from zero when the operator starts, as Prometheus expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from heapsnap._units import MiB

#: From a small service's fraction of a second to a large heap's minutes.
PAUSE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
SIZE_BUCKETS = tuple(float(MiB << shift) for shift in range(0, 17, 2))  # 1 MiB to 64 GiB


class Metrics:
    """The operator's metrics, in a registry of their own (plus the process's RSS and CPU)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.finished = Counter(
            "heapsnap_captures",
            "HeapSnapshots finished, by namespace, outcome (Succeeded, Failed) and reason "
            "(the Ready condition's).",
            ["namespace", "outcome", "reason"],
            registry=self.registry,
        )
        self.running = Gauge(
            "heapsnap_captures_running", "Captures running now (each holds a slot).", registry=self.registry
        )
        self.waiting = Gauge(
            "heapsnap_captures_waiting",
            "Captures waiting for a slot or for another capture of the same pod.",
            registry=self.registry,
        )
        self.pause = Histogram(
            "heapsnap_target_pause_seconds",
            "How long V8 paused the captured process, per snapshot.",
            ["namespace"],
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "heapsnap_capture_duration_seconds",
            "From the capture's start to its last snapshot stored, per HeapSnapshot.",
            ["namespace"],
            buckets=PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.stored = Histogram(
            "heapsnap_snapshot_stored_bytes",
            "Bytes stored per snapshot (compressed ones when gzip is on).",
            ["namespace"],
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.policy_triggers = Counter(
            "heapsnap_policy_triggers",
            "HeapSnapshotPolicy triggers, by namespace, kind (schedule, memory, growth, restart) and "
            "outcome (Created; Cooldown, MaxConcurrent or Failed when no capture was created; "
            "DidNotFit, kind any, when a capture's preflight refused it).",
            ["namespace", "kind", "outcome"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "heapsnap_leader",
            "1 while this replica captures: it holds the Lease, or leader election is off.",
            registry=self.registry,
        )

    def watch_slots(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        """Read the gauges of running and waiting captures from the limits at each scrape."""
        self.running.set_function(running)
        self.waiting.set_function(waiting)

    def succeeded(self, namespace: str, results: Sequence[Any]) -> None:
        """One HeapSnapshot stored: ``results`` are the engine's, one per snapshot."""
        self.finished.labels(namespace, "Succeeded", "Succeeded").inc()
        for result in results:
            self.pause.labels(namespace).observe(result.pause_seconds)
            artifact = result.artifact
            self.stored.labels(namespace).observe(artifact.compressed_bytes or artifact.size_bytes)
        self.duration.labels(namespace).observe(sum(r.total_seconds for r in results))

    def failed(self, namespace: str, reason: str) -> None:
        self.finished.labels(namespace, "Failed", reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
