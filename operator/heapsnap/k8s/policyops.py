"""The API calls of HeapSnapshotPolicies: list them and their pods, create, list and delete
the HeapSnapshots they own, write their status and post Events about them."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.objects import patch_custom_status
from heapsnap.k8s.policy import (
    POD_ANNOTATION,
    POLICY_ANNOTATION,
    POLICY_KIND,
    POLICY_LABEL,
    POLICY_PLURAL,
    TRIGGER_ANNOTATION,
)
from heapsnap.k8s.types import GROUP, KIND, PLURAL, VERSION, LabelSelector


def label_value(name: str) -> str:
    """A policy name as a label value (at most 63 characters; longer ones end in a hash)."""
    if len(name) <= 63:
        return name
    return f"{name[:54].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def snapshot_name(policy: str, pod: str, when: datetime.datetime) -> str:
    """``<policy>-<pod>-<yyyymmdd-hhmmss>``: readable, and the same on a retry of one trigger."""
    stamp = when.astimezone(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{policy}-{pod}"
    if len(base) > 200:
        base = f"{base[:190].rstrip('-.')}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    return f"{base}-{stamp}"


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


class PolicyCluster:
    def __init__(self, api: ApiConnection) -> None:
        self.api = api

    async def list_policies(self, namespaces: Iterable[str]) -> list[dict[str, Any]]:
        custom = self.api.custom
        spaces = list(namespaces)
        if not spaces:
            found = await self.api.call(custom.list_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL)
            return list(found.get("items", []))
        items: list[dict[str, Any]] = []
        for ns in spaces:
            found = await self.api.call(
                custom.list_namespaced_custom_object, GROUP, VERSION, ns, POLICY_PLURAL
            )
            items.extend(found.get("items", []))
        return items

    async def list_pods(self, namespace: str, selector: LabelSelector) -> list[Any]:
        pods = await self.api.call(
            self.api.get,
            f"/api/v1/namespaces/{namespace}/pods",
            "V1PodList",
            labelSelector=selector.to_query(),
        )
        return list(pods.items)

    async def list_owned(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        found = await self.api.call(
            self.api.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            label_selector=f"{POLICY_LABEL}={label_value(name)}",
        )
        return [obj for obj in found.get("items", []) if owned_by(obj, uid)]

    async def create_snapshot(
        self,
        policy: Mapping[str, Any],
        name: str,
        pod: str,
        trigger: str,
        reason: str,
        spec: Mapping[str, Any],
    ) -> bool:
        """Create the HeapSnapshot; False when one of that name exists already (a retry)."""
        meta = policy["metadata"]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {POLICY_LABEL: label_value(meta["name"]), f"{GROUP}/trigger": trigger},
                "annotations": {
                    POLICY_ANNOTATION: meta["name"],
                    POD_ANNOTATION: pod,
                    TRIGGER_ANNOTATION: reason[:1024],
                },
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": POLICY_KIND,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": dict(spec),
        }
        try:
            await self.api.call(
                self.api.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                body,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def delete_snapshot(self, namespace: str, name: str) -> None:
        try:
            await self.api.call(
                self.api.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Write the policy's status; False when the policy is gone."""
        return await patch_custom_status(self.api, POLICY_PLURAL, namespace, name, status)

    async def event(self, policy: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event about the policy (core/v1, as kubectl describe shows them)."""
        meta = policy["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": POLICY_KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "heapsnap-operator"},
            "reportingComponent": "heapsnap-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

        def post() -> None:
            url = f"{self.api.server}/api/v1/namespaces/{meta['namespace']}/events"
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json",
                **self.api.auth_headers(),
            }
            response = self.api.api_client.call_api(
                "POST", url, header_params=headers, body=body, _request_timeout=30
            )
            response.read()
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response)

        await self.api.call(post)
