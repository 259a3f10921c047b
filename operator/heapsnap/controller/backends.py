"""The real engine, S3 sink and pod transport behind ``capture.Backends``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heapsnap.controller.capture import maybe_await
from heapsnap.engine import (
    CaptureOptions,
    CaptureResult,
    ProcessSelector,
    capture,
    capture_series,
    close_inspector,
)
from heapsnap.errors import HeapsnapError
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
        kms_key_id=spec.s3.kms_key_id,
    )


def capture_options(spec: HeapSnapshotSpec) -> CaptureOptions:
    return CaptureOptions(
        method=spec.method,
        inspector_port=spec.inspector_port,
        transfer=spec.transfer,
        preflight=spec.preflight,
        timeout_seconds=float(spec.timeout_seconds),
        worker=spec.target.worker_thread_id,
        redact=spec.redact,
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

    async def close_inspector(self, host: PodHost, pid: int, port: int) -> bool:
        return await close_inspector(host, pid, port)

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

    async def capture_series(
        self,
        host: PodHost,
        sinks: Sequence[s3.S3Sink],
        spec: HeapSnapshotSpec,
        on_progress: Callable[[Any], Awaitable[None]],
    ) -> list[CaptureResult]:
        assert spec.series is not None
        for sink in sinks:
            await sink.prepare()
        selector = ProcessSelector(pid=spec.target.pid, command_contains=spec.target.command_contains)
        return await capture_series(
            host,
            lambda index: sinks[index],
            count=spec.series.count,
            interval_seconds=float(spec.series.interval_seconds),
            selector=selector,
            options=capture_options(spec),
            on_progress=on_progress,
            sample_allocations=spec.series.sample_allocations,
        )

    async def analyze(
        self, spec: HeapSnapshotSpec, credentials: Mapping[str, str], request: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await run_analysis_job(spec, credentials, request)


async def run_analysis_job(
    spec: HeapSnapshotSpec, credentials: Mapping[str, str], request: Mapping[str, Any], limit: float = 600
) -> dict[str, Any]:
    """Run ``analysis_job`` in a child process: its memory is the snapshot's, not the operator's."""
    payload = {
        "endpoint": spec.s3.endpoint,
        "region": spec.s3.region,
        "pathStyle": spec.s3.force_path_style,
        **request,
    }
    env = {**os.environ, **{k: v for k, v in credentials.items() if v}}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "heapsnap.controller.analysis_job",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate(json.dumps(payload).encode())
    except asyncio.CancelledError:
        # The operator is stopping: the child must not outlive it.
        process.kill()
        await process.wait()
        raise
    except TimeoutError:
        process.kill()
        await process.wait()
        raise HeapsnapError(
            f"The analysis took longer than {limit:g} s; run heapsnap diff/leaks on the artifacts.",
            reason="AnalysisTimeout",
        ) from None
    try:
        result: dict[str, Any] = json.loads(out or b"{}")
    except json.JSONDecodeError:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise HeapsnapError(f"The analysis failed: {tail[0]}", reason="AnalysisFailed") from None
    if "error" in result:
        raise HeapsnapError(result["error"]["message"], reason=result["error"]["reason"])
    if process.returncode:
        raise HeapsnapError(f"The analysis exited with {process.returncode}.", reason="AnalysisFailed")
    return result


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sink helper whether it is a coroutine function or blocking boto3 code."""
    if asyncio.iscoroutinefunction(fn):
        return await fn(*args)
    return await maybe_await(await asyncio.to_thread(fn, *args))
