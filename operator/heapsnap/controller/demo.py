"""The operator part of ``heapsnap demo --cluster``: one HeapSnapshot, end to end.

``capture_with_operator`` runs the operator in-process against a cluster (the local
control plane of tests/cluster, or any other), creates the S3 credentials Secret and a
HeapSnapshot of a pod, reports each status change, and returns the finished resource.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from heapsnap.controller.runner import run
from heapsnap.controller.settings import Settings
from heapsnap.errors import CaptureTimeout, InvalidInput
from heapsnap.k8s.api import connect
from heapsnap.k8s.types import GROUP, KIND, PLURAL, VERSION
from heapsnap.sinks.s3 import S3Config

__all__ = ["capture_with_operator"]

SECRET = "heapsnap-demo-s3"


def _manifest(
    name: str, pod: str, s3: S3Config, pid: int | None, method: str, timeout: int
) -> dict[str, Any]:
    storage: dict[str, Any] = {"bucket": s3.bucket, "forcePathStyle": s3.force_path_style}
    if s3.prefix:
        storage["prefix"] = s3.prefix
    if s3.endpoint_url:
        storage["endpoint"] = s3.endpoint_url
    if s3.region:
        storage["region"] = s3.region
    if s3.access_key_id:
        storage["credentialsSecret"] = SECRET
    target: dict[str, Any] = {"podName": pod}
    if pid is not None:
        target["process"] = {"pid": pid}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"target": target, "method": method, "timeoutSeconds": timeout, "storage": {"s3": storage}},
    }


def _secret(s3: S3Config) -> dict[str, Any]:
    data = {"AWS_ACCESS_KEY_ID": s3.access_key_id or "", "AWS_SECRET_ACCESS_KEY": s3.secret_access_key or ""}
    if s3.session_token:
        data["AWS_SESSION_TOKEN"] = s3.session_token
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "data": encoded}


async def capture_with_operator(
    *,
    kubeconfig: str | Path,
    namespace: str,
    pod: str,
    s3: S3Config,
    pid: int | None = None,
    method: str = "auto",
    name: str | None = None,
    timeout_seconds: int = 300,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Capture ``pod`` through a HeapSnapshot handled by an in-process operator.

    ``on_update`` gets the status at each change. Returns the finished resource (its
    ``status.phase`` says whether it Succeeded); the operator is stopped before returning.
    """
    os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf logs in through the same kubeconfig
    api = connect(str(kubeconfig))
    name = name or f"{pod[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
    if s3.access_key_id:
        with contextlib.suppress(ApiException):
            await api.call(api.core.delete_namespaced_secret, SECRET, namespace)
        await api.call(api.core.create_namespaced_secret, namespace, _secret(s3))
    stop = asyncio.Event()
    settings = Settings(namespaces=(namespace,), leader_election=False, health_port=0, identity="demo")
    operator = asyncio.create_task(run(settings, stop))
    try:
        try:
            await api.call(
                api.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                _manifest(name, pod, s3, pid, method, timeout_seconds),
            )
        except ApiException as error:
            raise InvalidInput(f"The API server refused the HeapSnapshot: {error.body or error}") from None
        last: dict[str, Any] = {}
        async with asyncio.timeout(timeout_seconds + 60):
            while True:
                obj = await api.call(
                    api.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
                )
                status = dict(obj.get("status") or {})
                if status and status != last and on_update is not None:
                    on_update(status)
                last = status
                if status.get("phase") in ("Succeeded", "Failed"):
                    return dict(obj)
                if operator.done():
                    operator.result()
                    raise InvalidInput("The operator stopped before the HeapSnapshot finished.")
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise CaptureTimeout(
            f"HeapSnapshot {namespace}/{name} did not finish within {timeout_seconds + 60} s."
        ) from None
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await operator
