"""kopf handlers: thin, each hands a resource to a plain module.

Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import kopf

from heapsnap.controller.capture import Limits, run_capture
from heapsnap.errors import HeapsnapError
from heapsnap.k8s.types import GROUP, PLURAL, VERSION, object_key, parse_spec

CAPTURE_RETRIES = 5
FINALIZER = "heapsnap.dev/delete-artifact"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace scans: RBAC stays minimal
    settings.peering.standalone = True  # the Lease (leader.py) is what keeps replicas apart
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.reporting_component = "heapsnap-operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    if "limits" not in memo:
        memo["limits"] = Limits(max_concurrent=4)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``, so the Lease is handed back and the exit code is 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)


@kopf.on.startup()
async def take_back_signals(memo: kopf.Memo, **_: Any) -> None:
    """kopf's own SIGTERM handler leaves its task waiting on our stop flag hanging, which
    costs 5 s of the pod's grace period; setting the flag itself stops kopf at once."""
    if "stop" in memo:  # async handlers run in the loop's (main) thread
        stop_on_signals(memo["stop"])


@kopf.on.login(retries=3)
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf uses the operator's own API connection: one kubeconfig (or service account) for all."""
    api = memo["cluster"].api
    cfg = api.configuration
    header = api.auth_headers().get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # The client's in-cluster config writes "bearer <token>" (lower case), a kubeconfig's
    # token "Bearer <token>": HTTP auth schemes are case-insensitive (RFC 9110, 11.1).
    bearer = scheme.lower() == "bearer"
    return kopf.ConnectionInfo(
        server=api.server,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme="Bearer" if bearer else None,
        token=token if bearer else None,
        username=cfg.username or None if not bearer else None,
        password=cfg.password or None if not bearer else None,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
    )


class KopfRecorder:
    """Events on the HeapSnapshot, through kopf's batched poster."""

    def __init__(self, body: kopf.Body) -> None:
        self.body = body

    def event(self, type_: str, reason: str, message: str) -> None:
        kopf.event(self.body, type=type_, reason=reason, message=message[:1024])


@kopf.on.create(GROUP, VERSION, PLURAL, retries=CAPTURE_RETRIES, backoff=5, timeout=86400 + 600)
async def capture_snapshot(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await run_capture(
        body,
        cluster=memo["cluster"],
        backends=memo["backends"],
        recorder=KopfRecorder(body),
        limits=memo["limits"],
        metrics=memo.get("metrics"),
    )


def _deletes_artifact(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_deletes_artifact, retries=5, backoff=10, timeout=600)
async def delete_artifact(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """With ``deletionPolicy: Delete`` the artifact goes with the resource."""
    status = body.get("status") or {}
    meta = body["metadata"]
    try:
        spec = parse_spec(body.get("spec") or {})
        key = status.get("key") or object_key(
            spec.s3, meta["namespace"], meta["name"], meta["uid"], gzip=spec.compression == "gzip"
        )
        credentials: dict[str, str] = {}
        if spec.s3.credentials_secret:
            credentials = await memo["cluster"].read_credentials(
                meta["namespace"], spec.s3.credentials_secret
            )
        backends = memo["backends"]
        config = backends.s3_config(spec, credentials)
        await backends.abort_uploads(config, key)
        await backends.delete_object(config, key)
    except HeapsnapError as error:
        KopfRecorder(body).event("Warning", error.reason, f"Could not delete the artifact: {error.message}")
        if retry + 1 >= 5 or not error.retryable:
            raise kopf.PermanentError(error.message) from error
        raise kopf.TemporaryError(error.message, delay=10) from error
