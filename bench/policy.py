"""What one HeapSnapshotPolicy round costs the operator: wall time and API requests for a
policy matching N pods, quiet (nothing fires) and with a schedule firing for all of them.

    .venv/bin/python bench/policy.py --pods 200 --rounds 10

Starts the local control plane, creates N pods on the kwok node (no process behind them:
only the policy loop runs, no capture) and one policy with a schedule and a memory
trigger whose readings come from a kubelet-format summary held in memory; times
``PolicyController.reconcile_all`` and counts the API requests it makes.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import datetime
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from heapsnap.controller.policy import PolicyController  # noqa: E402
from heapsnap.devcluster.harness import Cluster  # noqa: E402
from heapsnap.k8s.api import connect  # noqa: E402
from heapsnap.k8s.memory import Readings, parse_summary  # noqa: E402
from heapsnap.k8s.policyops import PolicyCluster  # noqa: E402

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.value = datetime.datetime.now(datetime.UTC)

    def now(self) -> datetime.datetime:
        return self.value


class Summary:
    name = "kubelet"

    def __init__(self, namespace: str, pods: int) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.summary = {
            "pods": [
                {
                    "podRef": {"name": f"api-{i:04d}", "namespace": namespace, "uid": str(i)},
                    "containers": [{"name": "app", "memory": {"time": now, "workingSetBytes": 100 * MiB}}],
                }
                for i in range(pods)
            ]
        }

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        names = {p.metadata.name for p in pods}
        return {(r.pod, r.container): r for r in parse_summary(self.summary) if r.pod in names}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heapsnap-bench-policy-") as tmp:
        cluster = Cluster.start(Path(tmp) / "cluster")
        try:
            return run(cluster, args.pods, args.rounds)
        finally:
            cluster.stop()


def run(cluster: Cluster, count: int, rounds: int) -> int:
    for crd in ("heapsnap.dev_heapsnapshots.yaml", "heapsnap.dev_heapsnapshotpolicies.yaml"):
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshotpolicies.heapsnap.dev"
    )
    namespace = cluster.create_namespace("bench-policy")
    pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"api-{i:04d}", "namespace": namespace, "labels": {"app": "api"}},
                "spec": {
                    "nodeName": cluster.node_name,
                    "containers": [
                        {"name": "app", "image": "node:22", "resources": {"limits": {"memory": "1Gi"}}}
                    ],
                },
            }
            for i in range(count)
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pods))
    policy = {
        "apiVersion": "heapsnap.dev/v1alpha1",
        "kind": "HeapSnapshotPolicy",
        "metadata": {"name": "bench", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "container": "app",
            "triggers": [{"schedule": {"cron": "*/10 * * * *"}}, {"memory": {"above": "90%"}}],
            "template": {"storage": {"s3": {"bucket": "diag"}}},
            "maxConcurrent": 100,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    api = connect(str(cluster.kubeconfig))
    requests = {"n": 0}
    call = api.call

    async def counting(fn: Any, *a: Any, **k: Any) -> Any:
        requests["n"] += 1
        return await call(fn, *a, **k)

    api.call = counting  # type: ignore[method-assign]
    clock = Clock()
    controller = PolicyController(
        PolicyCluster(api), Summary(namespace, count), namespaces=[namespace], clock=clock
    )

    def status() -> dict[str, Any]:
        out = cluster.kubectl("get", "hsnappol", "bench", "-n", namespace, "-o", "json").stdout
        return dict(json.loads(out).get("status") or {})

    deadline = time.monotonic() + 120
    while status().get("matchedPods") != count:
        asyncio.run(controller.reconcile_all())
        if time.monotonic() > deadline:
            raise SystemExit("pods did not all become Running")
        time.sleep(0.5)

    def timed() -> tuple[float, int]:
        before = requests["n"]
        began = time.perf_counter()
        asyncio.run(controller.reconcile_all())
        return time.perf_counter() - began, requests["n"] - before

    quiet = [timed() for _ in range(rounds)]
    clock.value = datetime.datetime.fromisoformat(status()["nextScheduleTime"].replace("Z", "+00:00"))
    fired_seconds, fired_requests = timed()
    created = int(status().get("counts", {}).get("created", 0))
    print(f"policy matching {count} pods, {rounds} quiet rounds:")
    print(
        f"  quiet round: median {statistics.median(s for s, _ in quiet) * 1000:.0f} ms, "
        f"max {max(s for s, _ in quiet) * 1000:.0f} ms, {quiet[-1][1]} API requests"
    )
    print(
        f"  schedule firing for all {count}: {fired_seconds * 1000:.0f} ms, {fired_requests} API requests, "
        f"{created} HeapSnapshots created (the operator's limit of 4)"
    )
    api.api_client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
