"""The operator end to end: the real API server (with kwok), real Node.js processes,
the real S3 server, and the operator as its own process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import listening_ports
from tests.operator.conftest import (
    OperatorProcess,
    apply_snapshot,
    events_for,
    get_snapshot,
    wait_finished,
    wait_for,
)
from tests.support.nodeproc import GROWING_APP, LEAKY_APP, WORKER_APP
from tests.support.s3server import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

BUSY_APP = r"""
class LeakyThing { constructor(i) { this.id = i; } }
globalThis.leaked = [];
for (let i = 0; i < 20000; i++) globalThis.leaked.push(new LeakyThing(i));
// Busy for BUSY_MS after BUSY_AFTER_MS: a snapshot signal waits for the JS stack to empty.
function busy() { const end = Date.now() + Number(process.env.BUSY_MS || 15000); while (Date.now() < end) {} }
setTimeout(busy, Number(process.env.BUSY_AFTER_MS || 0));
setInterval(() => {}, 1000);
console.log('ready');
"""


SIGNALLED = ("signalling", "generating", "transferring")
# Objects in LEAKY_APP for a capture that takes seconds, long enough to interrupt.
BIG_HEAP = "1000000"
# The chart's terminationGracePeriodSeconds.
GRACE_SECONDS = 30


def s3_spec(s3: Any, bucket: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket or s3.bucket,
        "endpoint": s3.endpoint,
        "forcePathStyle": True,
        "region": "us-east-1",
        "credentialsSecret": "s3-credentials",
        **extra,
    }


def snapshot_spec(s3: Any, pod: str, **extra: Any) -> dict[str, Any]:
    storage = extra.pop("storage", None) or {"s3": s3_spec(s3)}
    return {"target": {"podName": pod}, "storage": storage, "timeoutSeconds": 120, **extra}


def failure(obj: dict[str, Any]) -> tuple[str, str]:
    f = obj["status"].get("failure") or {}
    return f.get("reason", ""), f.get("message", "")


# -- the API server validates the spec ------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"target": {}}, "set exactly one of spec.target.podName or spec.target.selector"),
        (
            {"target": {"podName": "a", "selector": {"matchLabels": {"app": "a"}}}},
            "set exactly one of spec.target.podName or spec.target.selector",
        ),
        ({"target": {"selector": {}}}, "an empty selector would match every pod"),
        ({"target": {"podName": "a", "process": {"pid": 1, "commandContains": "x"}}}, "at most one"),
        ({"target": {"podName": "a"}, "method": "gdb"}, 'supported values: "auto", "inspector", "signal"'),
        ({"target": {"podName": "a"}, "storage": {"s3": {"bucket": "s3://b"}}}, "bare bucket name"),
        (
            {"target": {"podName": "a"}, "storage": {"s3": {"bucket": "b", "endpoint": "minio:9000"}}},
            "must be a URL starting with http:// or https://",
        ),
        ({"target": {"podName": "a"}, "inspectorPort": 0}, "inspectorPort"),
        (
            {"target": {"podName": "a", "process": {"workerThreadId": 1}}, "method": "signal"},
            "the snapshot signal captures the main thread only",
        ),
        ({"target": {"podName": "a", "process": {"workerThreadId": 0}}}, "workerThreadId"),
        (
            {"target": {"podName": "a"}, "storage": {"s3": {"bucket": "b", "kmsKeyId": "alias/k"}}},
            "kmsKeyId needs spec.storage.s3.serverSideEncryption aws:kms",
        ),
    ],
)
def test_invalid_specs_are_rejected_by_the_api_server(
    cluster: Any, crd: Path, namespace: str, spec: dict[str, Any], words: str
) -> None:
    spec.setdefault("storage", {"s3": {"bucket": "snaps"}})
    with pytest.raises(subprocess.CalledProcessError) as info:
        apply_snapshot(cluster, namespace, "bad", spec)
    assert words in info.value.stderr


def test_spec_is_immutable(cluster: Any, crd: Path, namespace: str) -> None:
    spec = {"target": {"podName": "a"}, "storage": {"s3": {"bucket": "snaps"}}}
    apply_snapshot(cluster, namespace, "snap", spec)
    with pytest.raises(subprocess.CalledProcessError) as info:
        apply_snapshot(cluster, namespace, "snap", {**spec, "target": {"podName": "b"}})
    assert "spec is immutable" in info.value.stderr


# -- captures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "transfer", "used"),
    [("20", None, "tempfile"), ("20", "stream", "stream"), ("26", "stream", "stream")],
)
def test_inspector_capture_of_a_process_started_without_flags(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    version: str,
    transfer: str | None,
    used: str,
) -> None:
    # Node 26 (the LTS) sends 1 MiB chunks: each crosses the port-forward in many frames.
    pod = node_pod_factory(
        namespace, "leaky", script=LEAKY_APP, env={"LEAKY_COUNT": "20000"}, node_version=version
    )
    operator = start_operator(HEAPSNAP_HEALTH_PORT=str(free_port()))
    spec = snapshot_spec(s3, "leaky", method="inspector")
    spec["target"]["process"] = {"pid": pod.pid}
    if transfer is not None:
        spec["transfer"] = transfer  # stream: the chunks cross the API server's port-forward
    apply_snapshot(cluster, namespace, "snap", spec)
    obj = wait_finished(cluster, namespace, "snap")
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    artifact = status["artifact"]
    bucket, key = artifact["uri"][len("s3://") :].split("/", 1)
    stored = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == artifact["sha256"]
    assert len(stored) == artifact["compressedBytes"]
    assert status["target"]["method"] == "inspector" and status["target"]["pid"] == pod.pid
    assert status["target"]["transfer"] == used
    assert "inspectorPort" not in status["target"]  # closed again: nothing left to close
    names = [c["name"] for c in status["summary"]["topConstructors"]]
    assert "LeakyThing" in names
    reasons = {e["reason"] for e in events_for(cluster, namespace, "snap")}
    assert {"TargetResolved", "Succeeded"} <= reasons
    table = cluster.kubectl("get", "hsnap", "snap", "-n", namespace).stdout
    assert "Succeeded" in table and "leaky" in table
    wide = cluster.kubectl("get", "hsnap", "snap", "-n", namespace, "-o", "wide").stdout
    assert f" {status['durations']['pauseSeconds']:g} " in wide, wide
    metrics = operator.metrics()
    ns = ("namespace", namespace)
    succeeded = frozenset({ns, ("outcome", "Succeeded"), ("reason", "Succeeded")})
    assert metrics[("heapsnap_captures_total", succeeded)] == 1
    assert metrics[("heapsnap_target_pause_seconds_count", frozenset({ns}))] == 1
    paused = metrics[("heapsnap_target_pause_seconds_sum", frozenset({ns}))]
    assert paused == pytest.approx(status["durations"]["pauseSeconds"], abs=0.002)
    assert metrics[("heapsnap_snapshot_stored_bytes_sum", frozenset({ns}))] == artifact["compressedBytes"]
    assert metrics[("heapsnap_captures_running", frozenset())] == 0
    assert metrics[("heapsnap_leader", frozenset())] == 1
    assert metrics[("process_resident_memory_bytes", frozenset())] > 0


def test_a_worker_thread_of_a_pod(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
) -> None:
    pod = node_pod_factory(namespace, "pool", script=WORKER_APP)
    start_operator()
    spec = snapshot_spec(s3, "pool", transfer="stream")  # the worker's chunks cross the port-forward
    spec["target"]["process"] = {"pid": pod.pid, "workerThreadId": 1}
    apply_snapshot(cluster, namespace, "worker", spec)
    obj = wait_finished(cluster, namespace, "worker")
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    assert (status["target"]["pid"], status["target"]["workerThreadId"]) == (pod.pid, 1)
    counts = {c["name"]: c["count"] for c in status["summary"]["topConstructors"]}
    assert counts.get("WorkerLeak") == 5000 and "LeakyThing" not in counts
    assert "inspectorPort" not in status["target"]


def test_signal_capture(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    tmp_path: Path,
) -> None:
    diag = tmp_path / "diag"
    diag.mkdir()
    args = ["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={diag}"]
    pod = node_pod_factory(namespace, "sig", script=LEAKY_APP, node_args=args, env={"LEAKY_COUNT": "20000"})
    start_operator()
    spec = snapshot_spec(s3, "sig", method="signal", compression="none")
    spec["target"]["process"] = {"pid": pod.pid}
    apply_snapshot(cluster, namespace, "snap", spec)
    obj = wait_finished(cluster, namespace, "snap")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    assert obj["status"]["target"]["method"] == "signal"
    assert list(diag.iterdir()) == [], "the diagnostic file was left behind"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing-pod", "PodNotFound"),
        ("missing-container", "ContainerNotFound"),
        ("missing-secret", "SecretNotFound"),
        ("wrong-credentials", "StorageAccessDenied"),
        ("missing-bucket", "BucketNotFound"),
    ],
)
def test_failures_have_a_reason(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    case: str,
    reason: str,
) -> None:
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "1000"})
    spec = snapshot_spec(s3, "app")
    spec["target"]["process"] = {"pid": pod.pid}
    if case == "missing-pod":
        spec["target"]["podName"] = "nope"
    elif case == "missing-container":
        spec["target"]["container"] = "sidecar"
    elif case == "missing-secret":
        spec["storage"]["s3"]["credentialsSecret"] = "nope"
    elif case == "wrong-credentials":
        cluster.kubectl(
            "create", "secret", "generic", "wrong", "-n", namespace,
            "--from-literal=AWS_ACCESS_KEY_ID=nobody", "--from-literal=AWS_SECRET_ACCESS_KEY=wrong",
        )  # fmt: skip
        spec["storage"]["s3"]["credentialsSecret"] = "wrong"
    elif case == "missing-bucket":
        spec["storage"]["s3"]["bucket"] = "no-such-bucket"
    operator = start_operator(HEAPSNAP_HEALTH_PORT=str(free_port()))
    apply_snapshot(cluster, namespace, "snap", spec)
    obj = wait_finished(cluster, namespace, "snap")
    assert obj["status"]["phase"] == "Failed"
    got, message = failure(obj)
    assert got == reason, message
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", reason, message)
    warnings = [e for e in events_for(cluster, namespace, "snap") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [reason]
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    failed = frozenset({("namespace", namespace), ("outcome", "Failed"), ("reason", reason)})
    assert operator.metrics()[("heapsnap_captures_total", failed)] == 1


@dataclass
class UnderWay:
    """A capture in progress: its target pod, the operator running it, the status then."""

    pod: Any
    operator: OperatorProcess
    status: dict[str, Any]


@pytest.fixture
def capture_under_way(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    tmp_path: Path,
) -> Callable[..., UnderWay]:
    """Start a target pod and an operator, apply HeapSnapshot ``snap`` and return once the
    capture is under way. ``signal``: BUSY_APP, busy for ``busy_ms`` (its snapshot files
    land in tmp_path), once the signal is sent. ``inspector``: LEAKY_APP with BIG_HEAP
    objects, once heapsnap opened its inspector and V8 is writing the snapshot."""

    def start(method: str, busy_ms: int = 15000) -> UnderWay:
        if method == "signal":
            args = ["--heapsnapshot-signal=SIGUSR2", f"--diagnostic-dir={tmp_path}"]
            env = {"BUSY_MS": str(busy_ms)}
            pod = node_pod_factory(namespace, "busy", script=BUSY_APP, node_args=args, env=env)
        else:
            pod = node_pod_factory(namespace, "leaky", script=LEAKY_APP, env={"LEAKY_COUNT": BIG_HEAP})
        operator = start_operator()
        spec = snapshot_spec(s3, pod.name, method=method)
        spec["target"]["process"] = {"pid": pod.pid}
        apply_snapshot(cluster, namespace, "snap", spec)

        def under_way() -> dict[str, Any] | None:
            status = get_snapshot(cluster, namespace, "snap").get("status") or {}
            if method == "signal":
                return status if status.get("step") in SIGNALLED else None
            opened = (status.get("target") or {}).get("inspectorPort")
            return status if opened and status.get("step") in ("generating", "transferring") else None

        status: dict[str, Any] = wait_for("the capture to be under way", under_way, 90, interval=0.1)
        return UnderWay(pod, operator, status)

    return start


def test_pod_deleted_mid_capture(
    cluster: Any, namespace: str, s3: Any, capture_under_way: Callable[..., UnderWay]
) -> None:
    capture_under_way("signal", busy_ms=25000)
    cluster.kubectl("delete", "pod", "busy", "-n", namespace, "--grace-period=0", "--force", "--wait=false")
    obj = wait_finished(cluster, namespace, "snap")
    assert failure(obj)[0] == "PodDeleted", failure(obj)
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")


def test_operator_killed_mid_capture_and_restarted(
    cluster: Any,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    tmp_path: Path,
    capture_under_way: Callable[..., UnderWay],
) -> None:
    capture_under_way("signal", busy_ms=15000).operator.kill()
    start_operator()
    obj = wait_finished(cluster, namespace, "snap")
    reason, message = failure(obj)
    assert reason == "OperatorRestarted", message
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    # Once the busy loop ends the snapshot is written; a second signal would leave a second file.
    time.sleep(15)
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".heapsnapshot"]) <= 1


def served(pod: Any) -> str:
    """What LEAKY_APP answers on its HTTP port (from its ``ready <port>`` line)."""
    port = wait_for("the app's ready line", lambda: re.search(rb"ready (\d+)", pod.output()), 30).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/", timeout=30) as response:
        return str(response.read().decode())


def inspector_ports(pid: int) -> list[int]:
    return asyncio.run(listening_ports(pid))


def assert_nothing_left(s3: Any, run: UnderWay, message: str) -> None:
    """No upload, no object, the inspector heapsnap opened closed (and said so), the target serving."""
    port = run.status["target"]["inspectorPort"]
    assert f"the inspector heapsnap opened on port {port} was closed" in message, message
    assert port not in inspector_ports(run.pod.pid)
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert not s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents")
    assert served(run.pod) == f"ok {BIG_HEAP}"


def test_operator_killed_mid_inspector_capture_closes_the_inspector_on_restart(
    cluster: Any,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    capture_under_way: Callable[..., UnderWay],
) -> None:
    run = capture_under_way("inspector")
    port = run.status["target"]["inspectorPort"]
    assert run.status["target"]["pid"] == run.pod.pid
    run.operator.kill()
    assert port in inspector_ports(run.pod.pid), "SIGKILL left the inspector open: the case under test"
    start_operator()
    obj = wait_finished(cluster, namespace, "snap")
    reason, message = failure(obj)
    assert reason == "OperatorRestarted", message
    assert_nothing_left(s3, run, message)


def test_sigterm_mid_capture_cleans_up_and_exits_0(
    cluster: Any,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    capture_under_way: Callable[..., UnderWay],
) -> None:
    """A rollout of the operator's pod during a capture: it stops cleanly within the grace period."""
    run = capture_under_way("inspector")
    assert run.operator.popen is not None
    os.killpg(run.operator.popen.pid, signal.SIGTERM)
    assert run.operator.popen.wait(GRACE_SECONDS) == 0, run.operator.output()
    # Before any successor runs: the stopping operator removed the upload itself.
    assert not s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    obj = get_snapshot(cluster, namespace, "snap")
    if obj["status"]["phase"] != "Failed":
        start_operator()  # the stopping operator left the rest of the clean-up to its successor
        obj = wait_finished(cluster, namespace, "snap")
    reason, message = failure(obj)
    assert reason in ("OperatorStopped", "OperatorRestarted"), message
    assert_nothing_left(s3, run, message)


def test_two_snapshots_of_one_pod(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
) -> None:
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "20000"})
    start_operator()
    for name in ("one", "two"):
        spec = snapshot_spec(s3, "app", method="inspector")
        spec["target"]["process"] = {"pid": pod.pid}
        apply_snapshot(cluster, namespace, name, spec)
    results = [wait_finished(cluster, namespace, name) for name in ("one", "two")]
    assert [r["status"]["phase"] for r in results] == ["Succeeded", "Succeeded"], [
        failure(r) for r in results
    ]
    # One capture per pod: the second took the target only once the first had finished.
    first, second = sorted(results, key=lambda r: r["status"]["completionTime"])
    resolved = next(c for c in second["status"]["conditions"] if c["type"] == "TargetResolved")
    assert resolved["lastTransitionTime"] >= first["status"]["completionTime"]
    keys = {r["status"]["artifact"]["uri"] for r in results}
    assert len(keys) == 2


@pytest.mark.slow
def test_twenty_pods_with_a_limit_of_four(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
) -> None:
    pods = [
        node_pod_factory(namespace, f"app-{i}", script=LEAKY_APP, env={"LEAKY_COUNT": "100"})
        for i in range(20)
    ]
    start_operator(HEAPSNAP_MAX_CONCURRENT_CAPTURES="4")
    for i, pod in enumerate(pods):
        spec = snapshot_spec(s3, pod.name, method="inspector")
        spec["target"]["process"] = {"pid": pod.pid}
        apply_snapshot(cluster, namespace, f"snap-{i}", spec)
    peak = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        items = json.loads(cluster.kubectl("get", "hsnap", "-n", namespace, "-o", "json").stdout)["items"]
        phases = [(o.get("status") or {}).get("phase") for o in items]
        peak = max(peak, sum(p in ("Capturing", "Uploading") for p in phases))
        if all(p in ("Succeeded", "Failed") for p in phases):
            break
        time.sleep(0.1)
    assert phases == ["Succeeded"] * 20, [(o.get("status") or {}).get("failure") for o in items]
    assert 1 <= peak <= 4


def test_two_replicas_capture_once(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
) -> None:
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "1000"})
    start_operator(POD_NAME="replica-a")
    start_operator(POD_NAME="replica-b")
    spec = snapshot_spec(s3, "app", method="inspector")
    spec["target"]["process"] = {"pid": pod.pid}
    apply_snapshot(cluster, namespace, "snap", spec)
    obj = wait_finished(cluster, namespace, "snap")
    assert obj["status"]["phase"] == "Succeeded", failure(obj)
    time.sleep(2)
    reasons = [e["reason"] for e in events_for(cluster, namespace, "snap")]
    assert reasons.count("TargetResolved") == 1 and reasons.count("Succeeded") == 1, reasons
    lease = json.loads(
        cluster.kubectl("get", "lease", "heapsnap-operator", "-n", namespace, "-o", "json").stdout
    )
    assert lease["spec"]["holderIdentity"] in ("replica-a", "replica-b")


def test_kubectl_plugin_capture_get_list(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    tmp_path: Path,
) -> None:
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "1000"})
    start_operator()

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl_heapsnap(cluster, namespace, *args)

    captured = plugin(
        "capture", "app", "--pid", str(pod.pid), "--method", "inspector", "--s3", f"s3://{s3.bucket}/plugin",
        "--endpoint", s3.endpoint, "--region", "us-east-1", "--path-style",
        "--credentials-secret", credentials, "--wait",
    )  # fmt: skip
    assert captured.returncode == 0, captured.stderr
    name = captured.stdout.split("heapsnapshot.heapsnap.dev/")[1].split()[0]
    sha = get_snapshot(cluster, namespace, name)["status"]["artifact"]["sha256"]
    assert sha in captured.stdout

    target = tmp_path / "snap.heapsnapshot.gz"
    fetched = plugin("get", name, "-o", str(target))
    assert fetched.returncode == 0, fetched.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha

    listed = plugin("list")
    assert listed.returncode == 0 and name in listed.stdout and "Succeeded" in listed.stdout


def kubectl_heapsnap(cluster: Any, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The kubectl plugin, as a user with the cluster's kubeconfig runs it."""
    return subprocess.run(
        [sys.executable, "-m", "heapsnap.cli.kubectl", "-n", namespace, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        timeout=300,
    )


def test_series_and_compare_to(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    tmp_path: Path,
) -> None:
    pod = node_pod_factory(namespace, "grow", script=GROWING_APP)
    start_operator()
    # A sample per 16 KiB: this target allocates ~0.2 MB/s, a handful of default samples.
    series = {"count": 3, "intervalSeconds": 1, "sampleAllocations": True, "samplingIntervalBytes": 16384}
    spec = snapshot_spec(s3, "grow", method="inspector", series=series)
    spec["target"]["process"] = {"pid": pod.pid}
    apply_snapshot(cluster, namespace, "series", spec)
    obj = wait_finished(cluster, namespace, "series", timeout=300)
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    assert len(status["artifacts"]) == 3 and status["artifact"] == status["artifacts"][-1]
    assert status["comparison"]["method"] == "ids"
    assert "LeakyThing" in [s["name"] for s in status["leakSuspects"]["suspects"]]
    analyzed = next(c for c in status["conditions"] if c["type"] == "Analyzed")
    assert analyzed["status"] == "True", analyzed
    # The setInterval callback that fills globalThis.kept allocates what stays.
    top = status["allocations"]["sites"][0]
    interval_line = next(
        n for n, line in enumerate(GROWING_APP.splitlines(), 1) if line.startswith("setInterval")
    )
    assert (top["function"], top["line"]) == ("(anonymous)", interval_line), status["allocations"]
    assert top["url"].endswith(".js") and top["liveBytes"] > 0.5 * status["allocations"]["liveBytes"]

    later = snapshot_spec(s3, "grow", method="inspector", compareTo="series")
    later["target"]["process"] = {"pid": pod.pid}
    apply_snapshot(cluster, namespace, "later", later)
    obj = wait_finished(cluster, namespace, "later", timeout=300)
    comparison = obj["status"]["comparison"]
    assert comparison["baseline"] == status["artifact"]["uri"]
    growth = {c["name"]: c["countDelta"] for c in comparison["classes"]}
    assert growth.get("LeakyThing", 0) > 0, comparison

    # The same analyses on the user's machine, with the resource's Secret: the series' leak
    # suspects equal the operator's, and compareTo's comparison gets its HTML report.
    local = kubectl_heapsnap(cluster, namespace, "analyze", "series", "--json", "--top", "10")
    assert local.returncode == 0, local.stderr
    fields = ("name", "count", "shallowSize", "retainedSize", "representativeId")
    suspects = [[s[f] for f in fields] for s in json.loads(local.stdout)["suspects"]]
    assert suspects == [[s[f] for f in fields] for s in status["leakSuspects"]["suspects"]]
    table = kubectl_heapsnap(cluster, namespace, "analyze", "series", "--top", "3")
    assert table.returncode == 0, table.stderr
    sampled = table.stdout.split("Allocations sampled during the series", 1)[1]
    assert f"(anonymous) ({top['url']}:{interval_line}:" in sampled
    report = tmp_path / "later.html"
    local = kubectl_heapsnap(cluster, namespace, "analyze", "later", "--html", str(report))
    assert local.returncode == 0, local.stderr
    assert f"diff of {status['artifact']['uri']}, {obj['status']['artifact']['uri']}" in local.stdout
    assert "LeakyThing" in local.stdout and "LeakyThing" in report.read_text()


def test_sigterm_while_waiting_for_the_lease_and_while_leading_exits_0_and_hands_it_back(
    cluster: Any, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    leader = start_operator(POD_NAME="term-a")
    wait_for("term-a to lead", lambda: "became leader" in leader.output())
    follower = start_operator(POD_NAME="term-b")
    wait_for("term-b to wait", lambda: "waiting for Lease" in follower.output())
    for process in (follower, leader):
        assert process.popen is not None
        os.killpg(process.popen.pid, signal.SIGTERM)
        assert process.popen.wait(30) == 0, process.output()
    out = cluster.kubectl("get", "lease", "heapsnap-operator", "-n", namespace, "-o", "json").stdout
    assert not json.loads(out)["spec"].get("holderIdentity")
