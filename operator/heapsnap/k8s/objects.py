"""Reads and writes of Kubernetes objects the operator needs, as async functions.

Each blocking ``kubernetes`` call runs in a thread. API errors become heapsnap errors
whose messages name the spec field to fix.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from heapsnap.errors import AmbiguousProcess, InvalidInput, PodError
from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.types import (
    CREDENTIAL_KEYS,
    GROUP,
    OPTIONAL_CREDENTIAL_KEYS,
    PLURAL,
    VERSION,
    TargetSpec,
)


class ResourceGone(Exception):
    """The HeapSnapshot itself was deleted; nothing is left to report to."""


@dataclass(frozen=True)
class ResolvedTarget:
    pod: str
    uid: str
    container: str
    node: str
    restart_count: int
    # A disk limit the container cannot see (statfs shows the node's disk): writing the
    # snapshot there could get the pod evicted.
    ephemeral_storage_limited: bool = False


def _started(pod: Any) -> datetime.datetime:
    started = pod.status.start_time or pod.metadata.creation_timestamp
    return started or datetime.datetime.max.replace(tzinfo=datetime.UTC)


def pick_container(pod: Any, wanted: str | None) -> str:
    """The container to capture: ``wanted``, or the only one; clear errors otherwise."""
    names = [c.name for c in pod.spec.containers]
    name = pod.metadata.name
    if wanted is not None:
        if wanted not in names:
            raise PodError(
                f"Pod {name} has no container {wanted!r} (it has {', '.join(names)}); "
                "fix spec.target.container.",
                reason="ContainerNotFound",
            )
        return wanted
    if len(names) != 1:
        raise PodError(
            f"Pod {name} has {len(names)} containers ({', '.join(names)}); "
            "set spec.target.container to the one running Node.js.",
            reason="ContainerRequired",
        )
    return str(names[0])


def check_running(pod: Any, container: str) -> int:
    """Raise unless the pod and ``container`` run; return the container's restart count."""
    name = pod.metadata.name
    if pod.metadata.deletion_timestamp is not None:
        raise PodError(f"Pod {name} is being deleted; target a running pod.", reason="PodNotRunning")
    if pod.status.phase != "Running":
        raise PodError(
            f"Pod {name} is {pod.status.phase or 'not running'}; a snapshot needs a Running pod.",
            reason="PodNotRunning",
        )
    for status in pod.status.container_statuses or []:
        if status.name == container:
            if status.state is not None and status.state.running is None:
                raise PodError(
                    f"Container {container} of pod {name} is not running; wait for it or pick another pod.",
                    reason="ContainerNotRunning",
                )
            return int(status.restart_count or 0)
    return 0


def resolve(pod: Any, target: TargetSpec) -> ResolvedTarget:
    container = pick_container(pod, target.container)
    restarts = check_running(pod, container)
    return ResolvedTarget(
        pod=pod.metadata.name,
        uid=pod.metadata.uid,
        container=container,
        node=pod.spec.node_name or "",
        restart_count=restarts,
        ephemeral_storage_limited=_ephemeral_storage_limited(pod, container),
    )


def _ephemeral_storage_limited(pod: Any, container: str) -> bool:
    for spec in pod.spec.containers:
        if spec.name == container:
            resources = getattr(spec, "resources", None)
            limits = (resources.limits if resources is not None else None) or {}
            return "ephemeral-storage" in limits
    return False


class Cluster:
    """The operator's view of the API server (real implementation of ``ClusterOps``)."""

    def __init__(self, api: ApiConnection) -> None:
        self.api = api

    async def find_pod(self, namespace: str, target: TargetSpec) -> Any:
        if target.pod_name is not None:
            try:
                return await self.api.call(self.api.get, _pod_path(namespace, target.pod_name), "V1Pod")
            except ApiException as error:
                if error.status == 404:
                    raise PodError(
                        f"Pod {namespace}/{target.pod_name} not found; fix spec.target.podName.",
                        reason="PodNotFound",
                    ) from None
                raise
        assert target.selector is not None
        selector = target.selector.to_query()
        pods = await self.api.call(
            self.api.get, f"/api/v1/namespaces/{namespace}/pods", "V1PodList", labelSelector=selector
        )
        running = [
            p for p in pods.items if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]
        if not running:
            raise PodError(
                f"No Running pod in {namespace} matches spec.target.selector ({selector}).",
                reason="PodNotFound",
            )
        if len(running) > 1 and target.on_multiple == "Fail":
            names = ", ".join(sorted(p.metadata.name for p in running))
            raise AmbiguousProcess(
                f"spec.target.selector ({selector}) matches {len(running)} Running pods ({names}) and "
                "spec.target.onMultiple is Fail; narrow the selector or use onMultiple: Oldest.",
                reason="MultiplePodsMatched",
            )
        return min(running, key=_started)

    async def read_snapshot(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.api.call(
                self.api.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(obj)

    async def read_pod(self, namespace: str, name: str) -> Any | None:
        try:
            return await self.api.call(self.api.get, _pod_path(namespace, name), "V1Pod")
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def read_credentials(self, namespace: str, secret: str) -> dict[str, str]:
        try:
            obj = await self.api.call(
                self.api.get, f"/api/v1/namespaces/{namespace}/secrets/{secret}", "V1Secret"
            )
        except ApiException as error:
            if error.status == 404:
                raise InvalidInput(
                    f"Secret {namespace}/{secret} named by spec.storage.s3.credentialsSecret does not exist; "
                    f"create it with keys {' and '.join(CREDENTIAL_KEYS)}.",
                    reason="SecretNotFound",
                ) from None
            if error.status == 403:
                raise InvalidInput(
                    f"The operator may not read Secret {namespace}/{secret}; grant it get on secrets in "
                    f"{namespace}.",
                    reason="SecretForbidden",
                ) from None
            raise
        return decode_credentials(namespace, secret, obj.data or {})

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if not await patch_custom_status(self.api, PLURAL, namespace, name, status):
            raise ResourceGone(f"HeapSnapshot {namespace}/{name} was deleted")


def decode_credentials(namespace: str, secret: str, data: Mapping[str, str]) -> dict[str, str]:
    """The Secret's S3 keys, decoded; a missing required key is a clear error."""
    missing = [k for k in CREDENTIAL_KEYS if not data.get(k)]
    if missing:
        raise InvalidInput(
            f"Secret {namespace}/{secret} lacks {', '.join(missing)}; it needs keys "
            f"{' and '.join(CREDENTIAL_KEYS)} (and optionally {OPTIONAL_CREDENTIAL_KEYS[0]}).",
            reason="SecretKeyMissing",
        )
    return {
        k: base64.b64decode(data[k]).decode().strip()
        for k in (*CREDENTIAL_KEYS, *OPTIONAL_CREDENTIAL_KEYS)
        if data.get(k)
    }


def _pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


async def patch_custom_status(
    api: ApiConnection, plural: str, namespace: str, name: str, status: Mapping[str, Any]
) -> bool:
    """Merge-patch the status subresource of one of heapsnap's resources; False when it is gone."""
    try:
        await api.call(
            api.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
