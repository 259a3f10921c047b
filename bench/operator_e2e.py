"""Operator overhead: time from ``kubectl apply`` to Succeeded next to the engine's own
capture of the same target, and the operator's peak RSS during that capture.

    .venv/bin/python bench/operator_e2e.py --objects 1000000        # about 100 MB of heap
    .venv/bin/python bench/operator_e2e.py --objects 8000000        # about 900 MB (needs ~8 GiB free)

Starts the local control plane (tests/cluster), a moto S3 server, a Node.js pod holding
``--objects`` LeakyThing instances, and the operator as a subprocess; prints figures.
Each capture gets a fresh pod of the same size, captured once its app has built all its
objects (its "ready" line: a pod is Ready as soon as its process starts).
"""

from __future__ import annotations

import sys

# Run as a script, this file's directory comes first on sys.path and its name would
# shadow the standard library's operator module for everything imported below.
if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    del sys.path[0]

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.support.nodeproc import LEAKY_APP  # noqa: E402
from tests.support.s3server import start_moto  # noqa: E402

from heapsnap.devcluster.harness import Cluster  # noqa: E402
from heapsnap.engine import CaptureOptions, ProcessSelector, capture  # noqa: E402
from heapsnap.sinks.s3 import S3Config, S3Sink  # noqa: E402
from heapsnap.transports.local import LocalHost  # noqa: E402


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def snapshot(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "hsnap", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1_000_000, help="LeakyThing instances in the target")
    parser.add_argument("--node", default="20", help="Node.js major version of the target")
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="heapsnap-bench-op-"))
    cluster = Cluster.start(workdir / "cluster")
    s3 = start_moto()
    operator: subprocess.Popen[bytes] | None = None
    pod = None
    try:
        bucket = s3.create_bucket()
        cluster.kubectl(
            "apply", "--server-side", "-f", str(ROOT / "crds" / "heapsnap.dev_heapsnapshots.yaml")
        )
        cluster.kubectl("wait", "--for=condition=Established", "crd/heapsnapshots.heapsnap.dev")
        namespace = cluster.create_namespace("bench")
        cluster.kubectl(
            "create", "secret", "generic", "s3", "-n", namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
        )  # fmt: skip
        heap_mb = max(4096, args.objects // 1000 * 4)

        def start_target(name: str) -> Any:
            started = cluster.start_node_pod(
                namespace,
                name,
                script=LEAKY_APP,
                node_version=args.node,
                node_args=[f"--max-old-space-size={heap_mb}"],
                env={"LEAKY_COUNT": str(args.objects)},
                ready_timeout=600,
            )
            deadline = time.monotonic() + 600
            while b"ready" not in started.output():
                if time.monotonic() > deadline or started.popen.poll() is not None:
                    raise SystemExit(f"the target never became ready: {started.output()[-2000:]!r}")
                time.sleep(0.2)
            return started

        pod = start_target("engine-target")
        config = S3Config(
            bucket=bucket,
            endpoint_url=s3.endpoint,
            region="us-east-1",
            force_path_style=True,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
        )
        options = CaptureOptions(method="inspector", preflight="skip", timeout_seconds=args.timeout)

        async def engine_capture() -> Any:
            sink = S3Sink(config, "bench/engine.heapsnapshot.gz", gzip=True)
            await sink.prepare()
            return await capture(LocalHost(), sink, selector=ProcessSelector(pid=pod.pid), options=options)

        started = time.monotonic()
        engine = asyncio.run(engine_capture())
        engine_wall = time.monotonic() - started
        pod.stop()
        pod = start_target("target")

        log = (workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "heapsnap.controller"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(cluster.kubeconfig),
                "HEAPSNAP_WATCH_NAMESPACES": namespace,
                "HEAPSNAP_LEADER_ELECTION": "false",
                "HEAPSNAP_HEALTH_PORT": "0",
            },
        )
        time.sleep(3)  # let kopf start watching so the apply is not queued behind start-up
        idle_rss = rss_peak_mib(operator.pid)
        manifest = {
            "apiVersion": "heapsnap.dev/v1alpha1",
            "kind": "HeapSnapshot",
            "metadata": {"name": "bench", "namespace": namespace},
            "spec": {
                "target": {"podName": "target", "process": {"pid": pod.pid}},
                "method": "inspector",
                "preflight": "skip",
                "timeoutSeconds": args.timeout,
                "storage": {
                    "s3": {
                        "bucket": bucket,
                        "endpoint": s3.endpoint,
                        "region": "us-east-1",
                        "forcePathStyle": True,
                        "credentialsSecret": "s3",
                    }
                },
            },
        }
        applied = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        steps: list[tuple[float, str]] = []
        while True:
            status = snapshot(cluster, namespace, "bench").get("status") or {}
            step = str(status.get("step"))
            if not steps or steps[-1][1] != step:
                steps.append((time.monotonic() - applied, step))
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if time.monotonic() - applied > args.timeout:
                raise SystemExit("timed out waiting for the HeapSnapshot")
            time.sleep(0.05)
        operator_wall = time.monotonic() - applied
        if status["phase"] != "Succeeded":
            raise SystemExit(f"HeapSnapshot failed: {status.get('failure')}")
        peak = rss_peak_mib(operator.pid)
        size_mib = status["artifact"]["sizeBytes"] / 1048576
        print(f"target: Node {args.node}, {args.objects} LeakyThing objects, snapshot {size_mib:.0f} MiB")
        print(f"engine capture (LocalHost -> S3):  {engine_wall:7.2f} s  (own {engine.total_seconds:.2f} s)")
        print(
            f"  engine: pause {engine.pause_seconds:.2f} s, transfer {engine.transfer_seconds:.2f} s, "
            f"by {engine.target.method} ({engine.target.transfer})"
        )
        print(f"operator apply -> Succeeded:       {operator_wall:7.2f} s")
        durations, seen = status.get("durations") or {}, status["target"]
        print(
            f"  operator: pause {durations.get('pauseSeconds')} s, "
            f"transfer {durations.get('transferSeconds')} s, "
            f"by {seen.get('method')} ({seen.get('transfer')}); steps seen at "
            + ", ".join(f"{at:.1f} s {name}" for at, name in steps)
        )
        print(f"ratio operator / engine:           {operator_wall / engine_wall:7.2f}x  (target < 1.2x)")
        print(
            f"operator peak RSS (VmHWM):         {peak:7.1f} MiB (idle {idle_rss:.1f} MiB; target < 150 MiB)"
        )
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(20)
        if pod is not None:
            pod.stop()
        s3.process.terminate()
        s3.process.wait(10)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
