"""``spec.ttlSecondsAfterFinished``: delete finished HeapSnapshots once their time is up.

A periodic sweep rather than one timer per resource, so nothing is lost across
restarts and no finalizer is needed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.types import GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def due(obj: Mapping[str, Any], now: datetime.datetime) -> bool:
    """Whether ``obj`` finished more than its TTL ago."""
    ttl = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
    status = obj.get("status") or {}
    if ttl is None or status.get("phase") not in ("Succeeded", "Failed") or not status.get("completionTime"):
        return False
    return _parse_time(status["completionTime"]) + datetime.timedelta(seconds=int(ttl)) <= now


async def _list(api: ApiConnection, namespaces: Iterable[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    spaces = list(namespaces)
    if not spaces:
        result = await api.call(api.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        return list(result.get("items", []))
    for ns in spaces:
        result = await api.call(api.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL)
        items.extend(result.get("items", []))
    return items


async def sweep(api: ApiConnection, namespaces: Iterable[str]) -> list[str]:
    """Delete every due HeapSnapshot once; return their ``namespace/name``."""
    now = datetime.datetime.now(datetime.UTC)
    deleted = []
    for obj in await _list(api, namespaces):
        if not due(obj, now):
            continue
        meta = obj["metadata"]
        try:
            await api.call(
                api.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
            )
            deleted.append(f"{meta['namespace']}/{meta['name']}")
        except ApiException as error:
            if error.status != 404:
                logger.warning("TTL delete of %s/%s failed: %s", meta["namespace"], meta["name"], error)
    return deleted


async def sweep_forever(api: ApiConnection, namespaces: Iterable[str], interval: float = 5.0) -> None:
    spaces = list(namespaces)
    while True:
        try:
            for name in await sweep(api, spaces):
                logger.info("deleted HeapSnapshot %s: ttlSecondsAfterFinished passed", name)
        except (ApiException, OSError) as error:
            logger.warning("TTL sweep failed: %s", error)
        await asyncio.sleep(interval)
