"""Containers' memory, read through the API server: no exec into pods, one request per node
(kubelet) or per namespace (metrics API) per poll.

Two sources behind one small interface (``MemorySource.read``), both reporting the
container's *working set*, the figure the kubelet evicts by and the OOM killer's limit is
compared with in practice (``memory.current`` minus inactive file pages):

- ``KubeletSummary``: the kubelet's stats summary through the API server's node proxy,
  ``GET /api/v1/nodes/{node}/proxy/stats/summary``, ``pods[].containers[].memory.workingSetBytes``
  (the field metrics-server itself scrapes). Needs ``get`` on ``nodes/proxy``.
- ``MetricsApi``: ``metrics.k8s.io`` (metrics-server), ``GET
  /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods``, ``containers[].usage.memory``.
  Needs ``list`` on ``pods.metrics.k8s.io``.

``AutoSource`` uses the metrics API where it is served and the kubelet otherwise.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.policy import parse_quantity

logger = logging.getLogger(__name__)

METRICS_API = "/apis/metrics.k8s.io/v1beta1"


@dataclass(frozen=True)
class Reading:
    """One container's working set at ``time``."""

    namespace: str
    pod: str
    container: str
    working_set: int
    time: datetime.datetime
    source: str


Readings = dict[tuple[str, str], Reading]  # (pod, container) -> reading


class MemorySource(Protocol):
    @property
    def name(self) -> str:
        """Where the readings come from, for messages."""
        ...

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        """The working set of every container of ``pods`` (V1Pod) that the source knows."""
        ...


def _time(value: Any) -> datetime.datetime:
    if isinstance(value, str) and value:
        try:
            return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.datetime.now(datetime.UTC)


def parse_summary(summary: Mapping[str, Any], source: str = "kubelet") -> list[Reading]:
    """Every container's working set in a kubelet stats summary (``/stats/summary``).

    A container the kubelet has no memory figures for yet (just started) is left out.
    """
    readings = []
    for pod in summary.get("pods") or []:
        ref = pod.get("podRef") or {}
        for container in pod.get("containers") or []:
            memory = container.get("memory") or {}
            working_set = memory.get("workingSetBytes")
            if working_set is None or not ref.get("name"):
                continue
            readings.append(
                Reading(
                    namespace=str(ref.get("namespace") or ""),
                    pod=str(ref["name"]),
                    container=str(container.get("name")),
                    working_set=int(working_set),
                    time=_time(memory.get("time")),
                    source=source,
                )
            )
    return readings


def parse_pod_metrics(listing: Mapping[str, Any], source: str = "metrics.k8s.io") -> list[Reading]:
    """Every container's memory in a ``metrics.k8s.io`` PodMetricsList."""
    readings = []
    for item in listing.get("items") or []:
        meta = item.get("metadata") or {}
        for container in item.get("containers") or []:
            memory = (container.get("usage") or {}).get("memory")
            if memory is None:
                continue
            readings.append(
                Reading(
                    namespace=str(meta.get("namespace") or ""),
                    pod=str(meta.get("name")),
                    container=str(container.get("name")),
                    working_set=parse_quantity(memory, "usage.memory"),
                    time=_time(item.get("timestamp")),
                    source=source,
                )
            )
    return readings


def _keep(readings: Iterable[Reading], namespace: str, pods: Sequence[Any]) -> Readings:
    names = {p.metadata.name for p in pods}
    return {(r.pod, r.container): r for r in readings if r.namespace == namespace and r.pod in names}


class KubeletSummary:
    """The kubelets' stats summaries, through the API server; one request per node, shared
    by every policy for ``max_age`` seconds."""

    name = "kubelet"

    def __init__(self, api: ApiConnection, max_age: float = 5.0) -> None:
        self.api = api
        self.max_age = max_age
        self._cache: dict[str, tuple[float, list[Reading]]] = {}

    async def node(self, node: str) -> list[Reading]:
        cached = self._cache.get(node)
        if cached is not None and time.monotonic() - cached[0] < self.max_age:
            return cached[1]
        summary = await self.api.call(self.api.get, f"/api/v1/nodes/{node}/proxy/stats/summary", "object")
        readings = parse_summary(summary)
        self._cache[node] = (time.monotonic(), readings)
        return readings

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        nodes = sorted({p.spec.node_name for p in pods if p.spec.node_name})
        found: list[Reading] = []
        for node in nodes:
            try:
                found.extend(await self.node(node))
            except (ApiException, OSError, ValueError) as error:
                # kwok's fake kubelet, a node that is down, or no nodes/proxy permission.
                logger.debug("no stats summary from node %s: %s", node, error)
        return _keep(found, namespace, pods)


class MetricsApi:
    """metrics.k8s.io (metrics-server); one request per namespace and poll."""

    name = "metrics.k8s.io"

    def __init__(self, api: ApiConnection) -> None:
        self.api = api

    async def served(self) -> bool:
        try:
            await self.api.call(self.api.get, METRICS_API, "object")
        except (ApiException, OSError):
            return False
        return True

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        listing = await self.api.call(self.api.get, f"{METRICS_API}/namespaces/{namespace}/pods", "object")
        return _keep(parse_pod_metrics(listing), namespace, pods)


class AutoSource:
    """The metrics API where it is served (checked every ``recheck`` seconds), else the kubelet."""

    def __init__(self, api: ApiConnection, recheck: float = 300.0) -> None:
        self.kubelet = KubeletSummary(api)
        self.metrics = MetricsApi(api)
        self.recheck = recheck
        self._checked: float | None = None
        self._served = False

    @property
    def name(self) -> str:
        return self.metrics.name if self._served else self.kubelet.name

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        now = time.monotonic()
        if self._checked is None or now - self._checked > self.recheck:
            self._served = await self.metrics.served()
            self._checked = now
        if self._served:
            try:
                found = await self.metrics.read(namespace, pods)
                if found:
                    return found
            except (ApiException, OSError, ValueError) as error:
                logger.debug("metrics.k8s.io failed, asking the kubelets: %s", error)
        return await self.kubelet.read(namespace, pods)


def make_source(api: ApiConnection, kind: str) -> MemorySource:
    if kind == "kubelet":
        return KubeletSummary(api)
    if kind == "metrics":
        return MetricsApi(api)
    return AutoSource(api)
