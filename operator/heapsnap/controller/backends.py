"""The real engine, S3 sink and pod transport behind ``capture.Backends``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from heapsnap.controller.capture import maybe_await
from heapsnap.engine import CaptureOptions, CaptureResult, ProcessSelector, capture
from heapsnap.k8s.api import ApiConnection
from heapsnap.k8s.objects import ResolvedTarget
from heapsnap.k8s.podhost import PodHost
from heapsnap.k8s.types import HeapSnapshotSpec
from heapsnap.sinks import s3


def s3_config(spec: HeapSnapshotSpec, credentials: Mapping[str, str]) -> s3.S3Config:
    # The key already carries spec.storage.s3.prefix (see types.object_key).
    return s3.S3Config(
        bucket=spec.s3.bucket,
        prefix="",
        endpoint_url=spec.s3.endpoint,
        region=spec.s3.region,
        force_path_style=spec.s3.force_path_style,
        access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
        session_token=credentials.get("AWS_SESSION_TOKEN"),
        server_side_encryption=spec.s3.server_side_encryption,
    )


def capture_options(spec: HeapSnapshotSpec) -> CaptureOptions:
    return CaptureOptions(
        method=spec.method,
        inspector_port=spec.inspector_port,
        preflight=spec.preflight,
        timeout_seconds=float(spec.timeout_seconds),
    )


@dataclass
class RealBackends:
    api: ApiConnection

    def host(self, namespace: str, target: ResolvedTarget) -> PodHost:
        return PodHost(self.api, namespace, target.pod, target.container)

    def s3_config(self, spec: HeapSnapshotSpec, credentials: Mapping[str, str]) -> s3.S3Config:
        return s3_config(spec, credentials)

    def sink(self, config: s3.S3Config, key: str, *, gzip: bool) -> s3.S3Sink:
        return s3.S3Sink(config, key, gzip=gzip)

    async def abort_uploads(self, config: s3.S3Config, key: str) -> None:
        await _off_loop(s3.abort_incomplete_uploads, config, key)

    async def delete_object(self, config: s3.S3Config, key: str) -> None:
        await _off_loop(s3.delete_object, config, key)

    async def capture(
        self,
        host: PodHost,
        sink: s3.S3Sink,
        spec: HeapSnapshotSpec,
        on_progress: Callable[[Any], Awaitable[None]],
    ) -> CaptureResult:
        # Bucket, credentials and permissions are checked before the target is touched.
        await sink.prepare()
        selector = ProcessSelector(pid=spec.target.pid, command_contains=spec.target.command_contains)
        return await capture(
            host, sink, selector=selector, options=capture_options(spec), on_progress=on_progress
        )


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sink helper whether it is a coroutine function or blocking boto3 code."""
    if asyncio.iscoroutinefunction(fn):
        return await fn(*args)
    return await maybe_await(await asyncio.to_thread(fn, *args))
