"""CaptureRun against an in-memory cluster and fake engine/sink (this layer only).

The fakes record what the real ones would have done: status patches, Events, uploads
aborted, captures started. The end-to-end tests repeat the important flows for real.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from heapsnap.controller import capture
from heapsnap.controller.capture import Limits, run_capture
from heapsnap.controller.metrics import Metrics
from heapsnap.engine import AllocationProfile, AllocationSite, Progress, TargetInfo
from heapsnap.errors import HeapsnapError, InvalidInput, PodError, SignalNotHandled
from heapsnap.k8s.objects import ResolvedTarget
from heapsnap.k8s.types import HeapSnapshotSpec, TargetSpec

pytestmark = pytest.mark.asyncio(loop_scope="session")


def make_pod(
    name: str = "api-0", uid: str = "pod-uid", containers: tuple[str, ...] = ("app",), limits: Any = None
) -> Any:
    resources = SimpleNamespace(limits=limits)
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, uid=uid, deletion_timestamp=None, creation_timestamp=None),
        spec=SimpleNamespace(
            containers=[SimpleNamespace(name=c, resources=resources) for c in containers], node_name="node-1"
        ),
        status=SimpleNamespace(
            phase="Running",
            start_time=None,
            container_statuses=[
                SimpleNamespace(name=c, restart_count=0, state=SimpleNamespace(running=object()))
                for c in containers
            ],
        ),
    )


@dataclass
class FakeCluster:
    pods: dict[str, Any] = field(default_factory=lambda: {"api-0": make_pod()})
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)

    async def read_snapshot(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.snapshots.get(name)

    async def find_pod(self, namespace: str, target: TargetSpec) -> Any:
        pod = self.pods.get(target.pod_name or "")
        if pod is None:
            raise PodError(f"Pod {namespace}/{target.pod_name} not found; fix spec.target.podName.")
        return pod

    async def read_pod(self, namespace: str, name: str) -> Any | None:
        return self.pods.get(name)

    async def read_credentials(self, namespace: str, secret: str) -> dict[str, str]:
        if secret not in self.secrets:
            raise InvalidInput(f"Secret {secret} does not exist", reason="SecretNotFound")
        return self.secrets[secret]

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patches.append(copy.deepcopy(dict(status)))

    @property
    def status(self) -> dict[str, Any]:
        return self.patches[-1]


@dataclass
class FakeBackends:
    behaviour: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[Any]] | None = None
    captures: int = 0
    aborted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    credentials: list[Mapping[str, str]] = field(default_factory=list)
    analyses: list[Mapping[str, Any]] = field(default_factory=list)
    analysis_error: HeapsnapError | None = None
    closed: list[tuple[str, int, int]] = field(default_factory=list)
    close_result: bool | Exception = True
    specs: list[HeapSnapshotSpec] = field(default_factory=list)

    def host(self, namespace: str, target: ResolvedTarget) -> Any:
        return target

    def s3_config(self, spec: HeapSnapshotSpec, credentials: Mapping[str, str]) -> Any:
        self.credentials.append(credentials)
        return spec.s3

    def sink(self, config: Any, key: str, *, gzip: bool) -> Any:
        return key

    async def abort_uploads(self, config: Any, key: str) -> None:
        self.aborted.append(key)

    async def delete_object(self, config: Any, key: str) -> None:
        self.deleted.append(key)

    async def close_inspector(self, host: Any, pid: int, port: int) -> bool:
        self.closed.append((host.uid, pid, port))
        if isinstance(self.close_result, Exception):
            raise self.close_result
        return self.close_result

    async def capture(
        self, host: Any, sink: Any, spec: HeapSnapshotSpec, on_progress: Callable[[Any], Awaitable[None]]
    ) -> Any:
        self.captures += 1
        self.specs.append(spec)
        assert self.behaviour is not None
        return await self.behaviour(on_progress)

    async def capture_series(
        self, host: Any, sinks: Any, spec: HeapSnapshotSpec, on_progress: Callable[[Any], Awaitable[None]]
    ) -> list[Any]:
        results = []
        for key in sinks:
            result = await self.capture(host, key, spec, on_progress)
            result.artifact = SimpleNamespace(**{**vars(result.artifact), "uri": f"s3://b/{key}"})
            results.append(result)
        assert spec.series is not None
        if spec.series.sample_allocations is not None:
            site = AllocationSite(
                "plantLeak", "/srv/app.js", 4, 20, 3 << 20, 6, [f"caller{n}" for n in range(9)]
            )
            results[-1].allocations = AllocationProfile(
                results[-1].target, 62.0, spec.series.sample_allocations, True, 4 << 20, [site], {}
            )
        return results

    async def analyze(
        self, spec: HeapSnapshotSpec, credentials: Mapping[str, str], request: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.analyses.append(dict(request))
        if self.analysis_error is not None:
            raise self.analysis_error
        found: dict[str, Any] = {}
        if "compare" in request:
            found["comparison"] = {"method": "ids", "classes": [{"name": "LeakyThing", "countDelta": 5}]}
        if "leaks" in request:
            found["leakSuspects"] = {"suspects": [{"name": "LeakyThing", "count": 5}]}
        return found


def progress(phase: str, **kw: Any) -> Progress:
    return Progress(phase, **kw)


def opened(port: int = 40123, pid: int = 7) -> Progress:
    """The engine's report right after it opened the target's inspector."""
    return Progress(
        "activating", message=f"inspector of pid {pid} open on port {port}", inspector_port=port, pid=pid
    )


def succeed(delay: float = 0.0, probe: Callable[[], None] | None = None) -> Any:
    async def run(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        for phase in ("probing", "preflight", "activating", "generating"):
            await on_progress(progress(phase))
        if probe is not None:
            probe()
        await asyncio.sleep(delay)
        await on_progress(progress("transferring", bytes_sent=10))
        await on_progress(progress("done", bytes_sent=20))
        return SimpleNamespace(
            artifact=SimpleNamespace(uri="s3://b/k", size_bytes=20, compressed_bytes=8, sha256="ab" * 32),
            target=TargetInfo(7, "v20.20.2", "node app.js", "inspector", transfer="tempfile"),
            pause_seconds=0.5,
            transfer_seconds=0.1,
            total_seconds=1.0,
            summary={"nodeCount": 5, "totalSelfSize": 100, "topBySize": [{"name": "LeakyThing"}]},
            warnings=[],
            allocations=None,
            redacted=False,
        )

    return run


def fail_with(error: HeapsnapError, after: str = "activating") -> Any:
    async def run(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress(after))
        raise error

    return run


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []

    def event(self, type_: str, reason: str, message: str) -> None:
        self.items.append((type_, reason, message))


def body(
    name: str = "snap", pod: str = "api-0", status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {"target": {"podName": pod}, "storage": {"s3": {"bucket": "snaps"}}, **spec},
        "status": status or {},
    }


async def run(
    b: dict[str, Any],
    cluster: FakeCluster,
    backends: FakeBackends,
    limits: Limits | None = None,
    metrics: Metrics | None = None,
) -> Events:
    events = Events()
    await run_capture(
        b, cluster=cluster, backends=backends, recorder=events, limits=limits or Limits(4), metrics=metrics
    )
    return events


async def test_success_fills_status_and_events() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    events = await run(body(), cluster, backends)
    status = cluster.status
    assert status["phase"] == "Succeeded"
    assert status["artifact"]["sha256"] == "ab" * 32
    assert status["target"] == {
        "pod": "api-0",
        "podUID": "pod-uid",
        "container": "app",
        "node": "node-1",
        "restartCount": 0,
        "pid": 7,
        "nodeVersion": "v20.20.2",
        "command": "node app.js",
        "method": "inspector",
        "transfer": "tempfile",
    }
    assert status["summary"]["topConstructors"][0]["name"] == "LeakyThing"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "TargetResolved": "True",
        "Ready": "True",
        "Captured": "True",
        "Uploaded": "True",
    }
    assert status["key"] == "shop/snap-uid-snap.heapsnapshot.gz"
    assert ("Normal", "Succeeded") in [e[:2] for e in events.items]
    # The step reached the API server before the engine could open the inspector.
    assert any(p.get("step") == "activating" for p in cluster.patches)


@pytest.mark.parametrize(
    ("limits", "asked", "used"),
    [
        (None, None, "auto"),
        ({"ephemeral-storage": "1Gi"}, None, "stream"),
        ({"ephemeral-storage": "1Gi"}, "tempfile", "tempfile"),
        ({"memory": "1Gi"}, None, "auto"),
    ],
)
async def test_an_ephemeral_storage_limit_keeps_auto_from_writing_in_the_container(
    limits: Any, asked: str | None, used: str
) -> None:
    cluster, backends = FakeCluster(pods={"api-0": make_pod(limits=limits)}), FakeBackends(succeed())
    await run(body(**({"transfer": asked} if asked else {})), cluster, backends)
    assert cluster.status["phase"] == "Succeeded"
    assert [spec.transfer for spec in backends.specs] == [used]


@pytest.mark.parametrize(
    ("warning", "kept"), [(None, None), ("The inspector ... is still listening.", 40123)]
)
async def test_a_closed_inspector_leaves_the_status_on_success(warning: str | None, kept: int | None) -> None:
    async def opened_then_succeed(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(opened())
        result = await succeed()(on_progress)
        result.warnings = [warning] if warning else []
        return result

    cluster, backends = FakeCluster(), FakeBackends(opened_then_succeed)
    await run(body(), cluster, backends)
    assert cluster.status["phase"] == "Succeeded"
    # None reaches the API server as null, which removes the field.
    assert cluster.status["target"]["inspectorPort"] == kept


async def test_finished_resource_is_left_alone() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    await run(body(status={"phase": "Failed"}), cluster, backends)
    assert backends.captures == 0 and cluster.patches == []


@pytest.mark.parametrize("step", ["activating", "signalling", "generating", "transferring"])
async def test_restart_after_side_effects_fails_without_capturing_again(step: str) -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    events = await run(body(status={"step": step}), cluster, backends)
    assert backends.captures == 0
    assert backends.aborted == ["shop/snap-uid-snap.heapsnapshot.gz"]
    assert cluster.status["phase"] == "Failed"
    assert cluster.status["failure"]["reason"] == "OperatorRestarted"
    assert events.items[-1][:2] == ("Warning", "OperatorRestarted")


async def test_restart_before_side_effects_captures() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    await run(body(status={"step": "preflight"}), cluster, backends)
    assert backends.captures == 1 and cluster.status["phase"] == "Succeeded"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"target": {"podName": "gone"}}, "PodNotFound", "spec.target.podName"),
        ({"target": {"podName": "api-0", "container": "side"}}, "ContainerNotFound", "spec.target.container"),
        (
            {"storage": {"s3": {"bucket": "snaps", "credentialsSecret": "nope"}}},
            "SecretNotFound",
            "does not exist",
        ),
    ],
)
async def test_bad_target_or_storage_fails_clearly(spec: dict[str, Any], reason: str, words: str) -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    b = body()
    b["spec"].update(spec)
    events = await run(b, cluster, backends)
    assert backends.captures == 0
    assert cluster.status["failure"]["reason"] == reason and words in cluster.status["failure"]["message"]
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert events.items[-1][:2] == ("Warning", reason)


async def test_several_containers_need_a_container() -> None:
    cluster = FakeCluster(pods={"api-0": make_pod(containers=("app", "proxy"))})
    await run(body(), cluster, FakeBackends(succeed()))
    assert cluster.status["failure"]["reason"] == "ContainerRequired"
    assert "app, proxy" in cluster.status["failure"]["message"]


async def test_engine_failure_is_reported_and_upload_aborted() -> None:
    cluster = FakeCluster()
    error = SignalNotHandled("The process does not handle SIGUSR2; use method: inspector.")
    backends = FakeBackends(fail_with(error))
    events = await run(body(method="signal"), cluster, backends)
    assert cluster.status["failure"] == {
        "reason": "SignalNotHandled",
        "message": "The process does not handle SIGUSR2; use method: inspector.",
    }
    captured = next(c for c in cluster.status["conditions"] if c["type"] == "Captured")
    assert captured["status"] == "False"
    assert backends.aborted == ["shop/snap-uid-snap.heapsnapshot.gz"]
    assert events.items[-1][:2] == ("Warning", "SignalNotHandled")


async def test_pod_deleted_mid_capture() -> None:
    cluster = FakeCluster()
    backends = FakeBackends(succeed(delay=10, probe=lambda: cluster.pods.clear()))
    await run(body(), cluster, backends)
    assert cluster.status["failure"]["reason"] == "PodDeleted"
    assert backends.aborted


async def test_an_engine_that_notices_first_still_reports_the_pod_deleted() -> None:
    # The engine's next exec finds no pod long before the operator's next look at it.
    cluster = FakeCluster()
    gone = PodError("pod shop/api-0, container app: not found.", reason="PodNotFound")

    async def run_engine(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress("generating"))
        cluster.pods.clear()
        raise gone

    backends = FakeBackends(run_engine)
    await run(body(), cluster, backends)
    assert cluster.status["failure"]["reason"] == "PodDeleted"
    assert backends.aborted


async def test_credentials_come_from_the_secret() -> None:
    cluster = FakeCluster(secrets={"s3": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}})
    backends = FakeBackends(succeed())
    b = body()
    b["spec"]["storage"]["s3"]["credentialsSecret"] = "s3"
    await run(b, cluster, backends)
    assert backends.credentials == [{"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}]


async def test_one_capture_per_pod_and_a_global_limit() -> None:
    pods = {f"p{i}": make_pod(f"p{i}", f"uid-p{i}") for i in range(6)}
    cluster = FakeCluster(pods=pods)
    running: list[int] = [0, 0]
    limits = Limits(max_concurrent=2)
    metrics = Metrics()
    metrics.watch_slots(lambda: limits.active, lambda: limits.waiting)
    gauges: list[tuple[float | None, float | None]] = []

    def probe() -> None:
        running[0] += 1
        running[1] = max(running[1], running[0])
        scraped = metrics.registry.get_sample_value
        gauges.append((scraped("heapsnap_captures_running"), scraped("heapsnap_captures_waiting")))

    async def behaviour(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        result = await succeed(delay=0.05, probe=probe)(on_progress)
        running[0] -= 1
        return result

    backends = FakeBackends(behaviour)
    bodies = [body(f"s{i}", pod=f"p{i % 3}") for i in range(6)]
    await asyncio.gather(*(run(b, cluster, backends, limits, metrics) for b in bodies))
    assert backends.captures == 6
    assert running[1] <= 2 and limits.peak <= 2
    # Two run at once while the other four wait; when the last starts, nobody waits.
    assert max(r for r, _ in gauges) == 2 and gauges[0][1] == 4 and gauges[-1][1] == 0
    assert (limits.active, limits.waiting) == (0, 0)
    finished = {"namespace": "shop", "outcome": "Succeeded", "reason": "Succeeded"}
    assert metrics.registry.get_sample_value("heapsnap_captures_total", finished) == 6
    waits = [c for p in cluster.patches for c in p.get("conditions", []) if c["reason"] == "Waiting"]
    assert waits, "waiting resources say so in their Ready condition"


async def test_series_stores_every_snapshot_and_analyses_them() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    events = await run(body(method="inspector", series={"count": 3, "intervalSeconds": 0}), cluster, backends)
    status = cluster.status
    assert status["phase"] == "Succeeded"
    keys = [f"shop/snap-uid-snap-{i}.heapsnapshot.gz" for i in (1, 2, 3)]
    assert [a["uri"] for a in status["artifacts"]] == [f"s3://b/{k}" for k in keys]
    assert status["artifact"]["uri"] == f"s3://b/{keys[-1]}"
    uris = [f"s3://b/{k}" for k in keys]
    assert backends.analyses == [{"compare": [uris[0], uris[2]], "leaks": uris}]
    assert status["leakSuspects"]["suspects"][0]["name"] == "LeakyThing"
    analyzed = next(c for c in status["conditions"] if c["type"] == "Analyzed")
    assert analyzed["status"] == "True" and "LeakyThing" in analyzed["message"]
    assert ("Normal", "Analyzed") in [e[:2] for e in events.items]


async def test_a_series_too_large_to_analyse_here_names_the_command_that_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capture, "ANALYSIS_MAX_BYTES", 19)  # succeed() stores 20 bytes
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    await run(body(method="inspector", series={"count": 3, "intervalSeconds": 0}), cluster, backends)
    assert cluster.status["phase"] == "Succeeded" and backends.analyses == []
    analyzed = next(c for c in cluster.status["conditions"] if c["type"] == "Analyzed")
    assert (analyzed["status"], analyzed["reason"]) == ("False", "TooLargeToAnalyze")
    assert "kubectl heapsnap analyze snap -n shop" in analyzed["message"]


async def test_a_series_with_allocation_sampling_says_where_the_leak_is_allocated() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    series = {"count": 3, "intervalSeconds": 0, "sampleAllocations": True, "samplingIntervalBytes": 65536}
    await run(body(method="inspector", series=series), cluster, backends)
    allocations = cluster.status["allocations"]
    assert (allocations["intervalBytes"], allocations["liveBytes"], allocations["seconds"]) == (
        65536,
        4 << 20,
        62.0,
    )
    (site,) = allocations["sites"]
    assert (site["function"], site["url"], site["line"], site["column"]) == (
        "plantLeak",
        "/srv/app.js",
        4,
        20,
    )
    assert site["liveBytes"] == 3 << 20 and site["callers"] == [f"caller{n}" for n in range(5)]


async def test_series_interrupted_by_a_restart_removes_every_snapshot() -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    b = body(method="inspector", series={"count": 2}, status={"step": "generating"})
    await run(b, cluster, backends)
    keys = [f"shop/snap-uid-snap-{i}.heapsnapshot.gz" for i in (1, 2)]
    assert backends.aborted == keys and backends.deleted == keys
    assert cluster.status["failure"]["reason"] == "OperatorRestarted"


async def test_compare_to_a_succeeded_snapshot() -> None:
    base = {"status": {"phase": "Succeeded", "artifact": {"uri": "s3://b/base"}}}
    cluster, backends = FakeCluster(snapshots={"base": base}), FakeBackends(succeed())
    await run(body(compareTo="base"), cluster, backends)
    assert backends.analyses == [{"compare": ["s3://b/base", "s3://b/k"]}]
    assert cluster.status["comparison"]["method"] == "ids"


@pytest.mark.parametrize(
    ("snapshots", "reason"),
    [({}, "BaselineNotFound"), ({"base": {"status": {"phase": "Failed"}}}, "BaselineNotReady")],
)
async def test_compare_to_problems_leave_the_capture_succeeded(
    snapshots: dict[str, Any], reason: str
) -> None:
    cluster, backends = FakeCluster(snapshots=snapshots), FakeBackends(succeed())
    events = await run(body(compareTo="base"), cluster, backends)
    assert cluster.status["phase"] == "Succeeded"
    analyzed = next(c for c in cluster.status["conditions"] if c["type"] == "Analyzed")
    assert (analyzed["status"], analyzed["reason"]) == ("False", reason)
    assert "spec.compareTo" in analyzed["message"]
    assert ("Warning", reason) in [e[:2] for e in events.items]


async def test_timeout_stops_the_engine_and_aborts_the_upload() -> None:
    cancelled: list[bool] = []

    async def hang(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress("generating"))
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    cluster, backends = FakeCluster(), FakeBackends(hang)
    await run(body(timeoutSeconds=1), cluster, backends)
    assert cluster.status["failure"]["reason"] == "CaptureTimeout"
    assert "spec.timeoutSeconds" in cluster.status["failure"]["message"]
    assert cancelled == [True] and backends.aborted


async def test_the_inspector_heapsnap_opened_is_recorded_before_the_engine_goes_on() -> None:
    cluster = FakeCluster()
    seen: list[dict[str, Any]] = []

    async def behaviour(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress("activating"))
        await on_progress(opened(port=40123, pid=7))
        seen.append(copy.deepcopy(cluster.status["target"]))
        return await succeed()(on_progress)

    await run(body(), cluster, FakeBackends(behaviour))
    assert seen[0]["inspectorPort"] == 40123 and seen[0]["pid"] == 7
    assert cluster.status["phase"] == "Succeeded"


def interrupted(step: str = "generating", **target: Any) -> dict[str, Any]:
    recorded = {
        "pod": "api-0",
        "podUID": "pod-uid",
        "container": "app",
        "restartCount": 0,
        "pid": 7,
        "inspectorPort": 40123,
        **target,
    }
    return {"step": step, "target": recorded}


@pytest.mark.parametrize("step", ["preflight", "generating", "transferring"])
async def test_restart_closes_the_inspector_heapsnap_opened(step: str) -> None:
    cluster, backends = FakeCluster(), FakeBackends(succeed())
    await run(body(status=interrupted(step)), cluster, backends)
    assert backends.captures == 0
    assert backends.closed == [("pod-uid", 7, 40123)]
    reason, message = cluster.status["failure"]["reason"], cluster.status["failure"]["message"]
    assert reason == "OperatorRestarted"
    assert "the inspector heapsnap opened on port 40123 was closed" in message


@pytest.mark.parametrize(
    ("pods", "close_result", "words", "tries"),
    [
        ({"api-0": make_pod(uid="new-uid")}, True, "the pod is gone", 0),
        ({}, True, "the pod is gone", 0),
        (None, False, "port 40123 of pid 7 is still listening (restart the container to close it)", 1),
        (
            None,
            OSError("exec refused"),
            "port 40123 of pid 7 was left open (closing it failed: exec refused)",
            1,
        ),
    ],
)
async def test_restart_says_what_became_of_the_inspector(
    pods: dict[str, Any] | None, close_result: bool | Exception, words: str, tries: int
) -> None:
    cluster = FakeCluster() if pods is None else FakeCluster(pods=pods)
    backends = FakeBackends(succeed(), close_result=close_result)
    await run(body(status=interrupted()), cluster, backends)
    assert len(backends.closed) == tries
    assert cluster.status["phase"] == "Failed"
    assert words in cluster.status["failure"]["message"], cluster.status["failure"]["message"]


async def test_restart_leaves_a_restarted_container_alone() -> None:
    pod = make_pod()
    pod.status.container_statuses[0].restart_count = 1
    cluster, backends = FakeCluster(pods={"api-0": pod}), FakeBackends(succeed())
    await run(body(status=interrupted()), cluster, backends)
    assert backends.closed == []
    assert "the container restarted" in cluster.status["failure"]["message"]


def hang_after_opening(under_way: asyncio.Event, cancels: list[str] | None = None) -> Any:
    """An engine that opened the inspector and is generating; its clean-up outlasts one
    cancellation when ``cancels`` is given (a target still busy writing the snapshot)."""

    async def run(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress("activating"))
        await on_progress(opened())
        await on_progress(progress("generating", percent=10))
        under_way.set()
        try:
            await asyncio.sleep(60)
        finally:
            if cancels is not None:
                cancels.append("first")
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancels.append("second")
                    raise

    return run


async def stop_mid_capture(cluster: FakeCluster, backends: FakeBackends, under_way: asyncio.Event) -> Events:
    """Run a capture and cancel it as kopf does when the operator stops (SIGTERM)."""
    events = Events()
    task = asyncio.ensure_future(
        run_capture(body(), cluster=cluster, backends=backends, recorder=events, limits=Limits(4))
    )
    await under_way.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):  # a guard against a hang, not a measurement
            await task
    return events


async def test_stopping_operator_cleans_up_and_fails_with_operator_stopped() -> None:
    under_way = asyncio.Event()
    cluster, backends = FakeCluster(), FakeBackends(hang_after_opening(under_way))
    events = await stop_mid_capture(cluster, backends, under_way)
    status = cluster.status
    assert (status["phase"], status["failure"]["reason"]) == ("Failed", "OperatorStopped")
    assert "step generating" in status["failure"]["message"]
    assert "port 40123 was closed" in status["failure"]["message"]
    assert backends.aborted and backends.closed == [("pod-uid", 7, 40123)]
    assert events.items[-1][:2] == ("Warning", "OperatorStopped")


async def test_stopping_before_the_target_is_touched_leaves_it_to_the_next_operator() -> None:
    under_way = asyncio.Event()

    async def hang(on_progress: Callable[[Any], Awaitable[None]]) -> Any:
        await on_progress(progress("probing"))
        under_way.set()
        await asyncio.sleep(60)

    cluster, backends = FakeCluster(), FakeBackends(hang)
    task = asyncio.ensure_future(
        run_capture(body(), cluster=cluster, backends=backends, recorder=Events(), limits=Limits(4))
    )
    await under_way.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cluster.status["phase"] != "Failed" and cluster.status["step"] == "probing"
    assert backends.aborted  # the multipart upload the sink may have begun
    # The next operator starts the capture over.
    again = FakeBackends(succeed())
    await run(body(status=cluster.status), cluster, again)
    assert again.captures == 1 and cluster.status["phase"] == "Succeeded"


async def test_stopping_operator_leaves_an_inspector_it_could_not_close_to_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capture, "STOP_BUDGET_SECONDS", 0.5)
    under_way, cancels = asyncio.Event(), []
    cluster = FakeCluster()
    backends = FakeBackends(hang_after_opening(under_way, cancels), close_result=False)
    await stop_mid_capture(cluster, backends, under_way)
    assert cancels == ["first", "second"], "the engine's clean-up was cut short to exit in time"
    status = cluster.status
    assert status["phase"] != "Failed" and "failure" not in status
    assert (status["step"], status["target"]["inspectorPort"]) == ("generating", 40123)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "OperatorStopped")
    assert "port 40123 of pid 7 is still listening; the next operator closes it" in ready["message"]
    assert backends.aborted
    successor = FakeBackends(succeed())
    await run(body(status=status), cluster, successor)
    assert successor.captures == 0 and successor.closed == [("pod-uid", 7, 40123)]
    assert cluster.status["failure"]["reason"] == "OperatorRestarted"
