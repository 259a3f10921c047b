"""The operator on the real node: `kubectl apply` -> Succeeded next to the engine alone on the
same kind of container, the target's pause, and the operator pod's peak memory from its cgroup.

    sudo .venv/bin/python bench/realnode_capture.py --objects 650000     # ~180 MB heap
    sudo .venv/bin/python bench/realnode_capture.py --objects 5500000    # ~1.5 GiB snapshot

Starts the control plane with kube-scheduler, the real node (kubelet + containerd), versitygw
on the node IP, and the operator by `helm install` of the chart, as a pod from its image (the
fixtures of tests/realnode). The target is the distroless Node image holding ``--objects``
LeakyThing instances. "Engine alone" is heapsnap's engine run from this machine through the
same API server, kubelet and containerd path (PodHost: exec and port-forward), into the same
bucket: the operator's own cost is what the ratio shows. The operator's peak is its
container's cgroup ``memory.max_usage_in_bytes`` (v1), reset before the capture.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.realnode import conftest as rn  # noqa: E402

from heapsnap.devcluster.realnode import memory_cgroup  # noqa: E402
from heapsnap.engine import CaptureOptions, ProcessSelector, capture  # noqa: E402
from heapsnap.k8s.api import connect  # noqa: E402
from heapsnap.k8s.podhost import PodHost  # noqa: E402
from heapsnap.sinks.s3 import S3Config, S3Sink  # noqa: E402

READY_APP = r"""
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
globalThis.leaked = [];
for (let i = 0; i < Number(process.env.COUNT); i++) globalThis.leaked.push(new LeakyThing(i));
console.log('ready');
setInterval(() => {}, 1000);
"""


def wait_ready_line(world: rn.RealWorld, name: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = world.cluster.kubectl("logs", name, "-n", rn.WATCHED, check=False).stdout
        if "ready" in logs:
            return
        time.sleep(0.5)
    raise SystemExit(f"{name} never printed its ready line")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=650_000, help="LeakyThing instances in the target")
    parser.add_argument("--node", default="20", help="Node.js major of the target (20 or 24)")
    parser.add_argument("--memory", default="", help="the target's memory limit (default: none)")
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()

    with rn.real_world(Path(tempfile.mkdtemp(prefix="heapsnap-bench-rn-"))) as world:
        return run(world, args)


def run(world: rn.RealWorld, args: argparse.Namespace) -> int:
    try:
        env = {"COUNT": str(args.objects)}
        heap_mb = max(4096, args.objects // 1000 * 4)
        env["NODE_OPTIONS"] = f"--max-old-space-size={heap_mb}"

        def target(name: str) -> rn.Target:
            made = world.target(name, READY_APP, major=args.node, env=env, memory=args.memory or None)
            wait_ready_line(world, name)
            return made

        # The engine alone, from this machine, through the API server and the real kubelet.
        target("engine-target")
        s3 = world.s3
        config = S3Config(
            bucket=rn.BUCKET, endpoint_url=s3.endpoint, region="us-east-1", force_path_style=True,
            access_key_id=s3.access_key, secret_access_key=s3.secret_key,
        )  # fmt: skip
        options = CaptureOptions(method="inspector", preflight="skip", timeout_seconds=args.timeout)

        async def engine_capture() -> Any:
            sink = S3Sink(config, "bench/engine.heapsnapshot.gz", gzip=True)
            await sink.prepare()
            host = PodHost(connect(str(world.cluster.kubeconfig)), rn.WATCHED, "engine-target", "app")
            return await capture(host, sink, selector=ProcessSelector(pid=1), options=options)

        started = time.monotonic()
        engine = asyncio.run(engine_capture())
        engine_wall = time.monotonic() - started
        world.remove_targets()

        # The operator pod, from kubectl apply.
        target("target")
        cgroup = memory_cgroup(world.operator_pid())
        idle = int((cgroup / "memory.usage_in_bytes").read_text()) / 2**20
        (cgroup / "memory.max_usage_in_bytes").write_text("0")
        spec = world.snapshot_spec(
            "target", method="inspector", preflight="skip", timeoutSeconds=args.timeout
        )
        spec["target"]["process"] = {"pid": 1}
        applied = time.monotonic()
        world.apply("bench", spec)
        obj = world.wait_phase("bench", timeout=args.timeout)
        operator_wall = time.monotonic() - applied
        peak = int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**20
        status = obj["status"]
        if status["phase"] != "Succeeded":
            raise SystemExit(f"HeapSnapshot failed: {status.get('failure')}")
        size = status["artifact"]["sizeBytes"] / 2**20
        durations, seen = status.get("durations") or {}, status["target"]
        print(
            f"real node: Node {args.node} distroless target, {args.objects} objects, snapshot {size:.0f} MiB"
        )
        engine_how = (
            f"pause {engine.pause_seconds:.2f} s, by {engine.target.method} ({engine.target.transfer})"
        )
        operator_how = (
            f"pause {durations.get('pauseSeconds')} s, by {seen.get('method')} ({seen.get('transfer')})"
        )
        print(f"engine alone (PodHost -> S3):   {engine_wall:7.2f} s  {engine_how}")
        print(f"operator apply -> Succeeded:    {operator_wall:7.2f} s  {operator_how}")
        print(f"ratio operator / engine:        {operator_wall / engine_wall:7.2f}x  (goal <= 1.10x)")
        print(f"operator pod memory (cgroup):   peak {peak:.1f} MiB, idle {idle:.1f} MiB  (goal < 150 MiB)")
        return 0
    finally:
        world.remove_targets()


if __name__ == "__main__":
    raise SystemExit(main())
