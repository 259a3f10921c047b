"""A HeapSnapshotPolicy handled by the operator process itself: a schedule (seconds-precise,
so the test waits seconds, not minutes) captures a real Node.js pod into the real S3 server
once, the cooldown holds across a SIGKILL of the operator, and the CLI shows it all."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heapsnap.cli.kubectl import build_parser
from heapsnap.cli.policy import build_policy, describe
from heapsnap.errors import InvalidInput
from heapsnap.k8s.policy import POLICY_LABEL, parse_policy
from tests.operator.conftest import OperatorProcess, wait_finished, wait_for
from tests.operator.test_policy_crd import POLICY_CRD, apply_policy
from tests.support.s3server import free_port

pytestmark = [pytest.mark.policy]

APP = "globalThis.kept = Array.from({length: 20000}, (_, i) => ({i})); setInterval(() => {}, 1000);"


def status_of(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "heapsnapshotpolicy", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def owned(cluster: Any, namespace: str, policy: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "heapsnapshots", "-n", namespace, "-l", f"{POLICY_LABEL}={policy}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def kubectl_heapsnap(cluster: Any, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "heapsnap.cli.kubectl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return result.stdout


@pytest.mark.cluster
@pytest.mark.s3
def test_the_operator_captures_on_schedule_once_per_cooldown_across_a_restart(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(POLICY_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshotpolicies.heapsnap.dev"
    )
    pod = node_pod_factory(namespace, "api-0", script=APP, labels={"app": "api"})
    storage = {
        "bucket": s3.bucket, "endpoint": s3.endpoint, "forcePathStyle": True, "region": "us-east-1",
        "credentialsSecret": credentials,
    }  # fmt: skip
    apply_policy(
        cluster,
        namespace,
        "every-2s",
        {
            "selector": {"matchLabels": {"app": "api"}},
            "container": "app",
            # kwok's pods all run on this machine, where exec sees every Node.js process.
            "process": {"pid": pod.pid},
            "triggers": [{"schedule": {"cron": "*/2 * * * * *"}}],  # seconds first: every 2 s
            "template": {"storage": {"s3": storage}, "timeoutSeconds": 120},
            "cooldown": "1h",
        },
    )
    port = free_port()
    operator = start_operator(HEAPSNAP_POLICY_INTERVAL_SECONDS="1", HEAPSNAP_HEALTH_PORT=str(port))
    (snap,) = wait_for("the policy's first capture", lambda: owned(cluster, namespace, "every-2s"), 60)
    done = wait_finished(cluster, namespace, snap["metadata"]["name"])
    assert done["status"]["phase"] == "Succeeded", done["status"].get("failure")
    key = done["status"]["artifact"]["uri"].split("/", 3)[3]
    assert s3.client.head_object(Bucket=s3.bucket, Key=key)["ContentLength"] > 0

    # Schedule times keep coming; the cooldown skips them all.
    skipped = wait_for(
        "two schedule times skipped by the cooldown",
        lambda: (
            (status_of(cluster, namespace, "every-2s").get("counts") or {}).get("skipped", 0) >= 2
            and status_of(cluster, namespace, "every-2s")["counts"]["skipped"]
        ),
        60,
    )
    samples = operator.metrics()
    assert samples[("heapsnap_policy_triggers_total", frozenset(
        {("namespace", namespace), ("kind", "schedule"), ("outcome", "Created")}))] == 1  # fmt: skip

    # SIGKILL in the middle of the cooldown: the next operator keeps to it.
    operator.kill()
    again = start_operator(HEAPSNAP_POLICY_INTERVAL_SECONDS="1")
    wait_for(
        "the restarted operator to skip two more schedule times",
        lambda: status_of(cluster, namespace, "every-2s")["counts"]["skipped"] >= skipped + 2,
        60,
    )
    assert len(owned(cluster, namespace, "every-2s")) == 1
    status = status_of(cluster, namespace, "every-2s")
    assert status["counts"]["created"] == 1 and status["recent"][0]["phase"] == "Succeeded"
    assert status["counts"]["succeeded"] == 1
    assert "Traceback" not in again.output()

    # The plugin shows which policy made the capture, and the policy itself.
    listing = kubectl_heapsnap(cluster, "-n", namespace, "list")
    header, row = listing.splitlines()[:2]
    assert "POLICY" in header.split() and "every-2s" in row.split()
    described = kubectl_heapsnap(cluster, "-n", namespace, "policy", "describe", "every-2s")
    assert snap["metadata"]["name"] in described and "Ready=True (Active)" in described
    policies = kubectl_heapsnap(cluster, "-n", namespace, "policy", "list")
    assert "schedule */2 * * * * *" in policies and "every-2s" in policies


def test_policy_create_builds_a_policy_the_operator_accepts(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            *("policy", "create", "api-leaks", "--selector", "app=api,tier=web", "-c", "app"),
            *("--s3", "s3://diag/prod", "--credentials-secret", "s3-creds"),
            *("--schedule", "0 3 * * *", "--time-zone", "Europe/Berlin", "--memory-above", "80%"),
            *("--growth", "30%/1h", "--restart-after", "10m", "--cooldown", "6h", "--series", "3"),
        ]
    )
    manifest = build_policy(args, "shop")
    assert manifest["metadata"] == {"name": "api-leaks", "namespace": "shop"}
    policy = parse_policy(manifest["spec"])
    assert [t.kind for t in policy.triggers] == ["schedule", "memory", "growth", "restart"]
    assert policy.selector.match_labels == {"app": "api", "tier": "web"} and policy.cooldown == 21600
    spec = policy.snapshot_spec("api-0")
    assert spec["storage"]["s3"] == {"bucket": "diag", "prefix": "prod", "credentialsSecret": "s3-creds"}
    assert spec["series"] == {"count": 3, "intervalSeconds": 60}


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--selector", "", "--memory-above", "80%"], "empty selector"),
        (["--selector", "app=api"], "at least one trigger"),
        (["--selector", "app=api", "--growth", "30%"], "BY/WITHIN"),
        (["--selector", "app=api", "--memory-above", "180%"], "spec.triggers[0].memory.above"),
    ],
)
def test_policy_create_refuses_bad_flags_naming_them(flags: list[str], words: str) -> None:
    args = build_parser().parse_args(["policy", "create", "p", "--s3", "s3://diag", *flags])
    with pytest.raises(InvalidInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        build_policy(args, "shop")


def test_describe_shows_pods_and_recent_captures() -> None:
    obj = {
        "metadata": {"name": "api-leaks", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "triggers": [{"memory": {"above": "80%"}}]},
        "status": {
            "counts": {"created": 1, "triggered": 1},
            "conditions": [
                {"type": "Headroom", "status": "False", "reason": "NoRoomForCapture", "message": "m"}
            ],
            "pods": [{"pod": "api-0", "outcome": "Created", "trigger": "memory", "reason": "at 900 MiB"}],
            "recent": [{"name": "api-leaks-api-0-1", "phase": "Succeeded", "time": "t", "reason": "r"}],
        },
    }
    text = describe(obj)
    assert "memory>80%" in text and "Headroom=False (NoRoomForCapture): m" in text
    assert "api-0: Created" in text and "api-leaks-api-0-1  Succeeded" in text
