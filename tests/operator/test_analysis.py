"""Series capture and the operator's analysis job, with a real Node.js process and the real
S3 server (no Kubernetes: the host is this machine, as the engine allows)."""

from __future__ import annotations

from typing import Any

import pytest

from heapsnap.controller.backends import RealBackends, run_analysis_job
from heapsnap.engine import Progress
from heapsnap.k8s.types import object_keys, parse_spec
from heapsnap.sinks.s3 import S3Sink
from heapsnap.transports.local import LocalHost
from tests.support.nodeproc import GROWING_APP, start_node

pytestmark = [pytest.mark.s3, pytest.mark.asyncio(loop_scope="session")]


async def test_series_then_leak_suspects_name_the_growing_class(s3: Any) -> None:
    spec = parse_spec(
        {
            "target": {"podName": "local"},
            "method": "inspector",
            "series": {"count": 3, "intervalSeconds": 1},
            "preflight": "skip",
            "storage": {
                "s3": {
                    "bucket": s3.bucket,
                    "endpoint": s3.endpoint,
                    "region": "us-east-1",
                    "forcePathStyle": True,
                }
            },
        }
    )
    credentials = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    backends = RealBackends(api=None)  # type: ignore[arg-type]
    config = backends.s3_config(spec, credentials)
    keys = object_keys(spec, "ns", "snap", "uid")
    sinks = [S3Sink(config, key, gzip=True) for key in keys]
    node = start_node(GROWING_APP)
    reports: list[Progress] = []

    async def on_progress(progress: Progress) -> None:
        reports.append(progress)

    try:
        spec = type(spec)(
            **{**vars(spec), "target": type(spec.target)(**{**vars(spec.target), "pid": node.pid})}
        )
        results = await backends.capture_series(LocalHost(), sinks, spec, on_progress)
    finally:
        node.stop()
    assert [r.artifact.uri for r in results] == [f"s3://{s3.bucket}/{k}" for k in keys]
    # One session for the whole series: the inspector is opened (a port reported) once.
    assert len([p for p in reports if p.inspector_port is not None]) == 1

    uris = [r.artifact.uri for r in results]
    found = await run_analysis_job(spec, credentials, {"compare": [uris[0], uris[2]], "leaks": uris})
    comparison = found["comparison"]
    assert comparison["method"] == "ids"
    growth = {c["name"]: c["countDelta"] for c in comparison["classes"]}
    assert growth.get("LeakyThing", 0) > 0
    suspects = {s["name"]: s for s in found["leakSuspects"]["suspects"]}
    assert "LeakyThing" in suspects, list(suspects)
    # The path is cut to fit the status, keeping the end that names the leaked object.
    path = suspects["LeakyThing"]["retainerPath"]
    assert path and path[-1]["className"] == "LeakyThing", path
    assert path[-1]["id"] == suspects["LeakyThing"]["representativeId"]


async def test_analysis_job_reports_a_missing_object(s3: Any) -> None:
    spec = parse_spec(
        {
            "target": {"podName": "x"},
            "storage": {"s3": {"bucket": s3.bucket, "endpoint": s3.endpoint, "forcePathStyle": True}},
        }
    )
    credentials = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    missing = f"s3://{s3.bucket}/nope.heapsnapshot"
    with pytest.raises(Exception) as info:
        await run_analysis_job(spec, credentials, {"compare": [missing, missing]})
    assert "nope.heapsnapshot" in str(info.value)
