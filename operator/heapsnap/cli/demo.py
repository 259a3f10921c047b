"""``heapsnap demo``: start a leaky Node.js app, capture it with no restart, show the leak.

The demo is a list of steps sharing one ``DemoContext``; each step prints what it does.
A later part (the operator on the local control plane) adds its own steps to ``STEPS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heapsnap._private import private_open
from heapsnap._units import MiB
from heapsnap.cli import _signals
from heapsnap.engine import CaptureOptions, CaptureResult, ProcessSelector, capture_series
from heapsnap.errors import InvalidInput
from heapsnap.sinks.file import FileSink
from heapsnap.sinks.s3 import S3Config, make_client
from heapsnap.transports.local import LocalHost

__all__ = ["STEPS", "DemoContext", "Step", "register"]


def shipped(name: str) -> Path:
    """A file of the repository root: in a checkout (an editable install) the file itself,
    in an installed wheel the copy setup.py put under heapsnap/_data/."""
    checkout = Path(__file__).resolve().parents[3] / name
    return checkout if checkout.exists() else Path(__file__).resolve().parents[1] / "_data" / name


APP = shipped("examples/leaky-app/server.js")


@dataclass
class DemoContext:
    app: Path
    out_dir: Path
    requests: int
    interval: float = 1.0
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    results: list[CaptureResult] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[DemoContext], Awaitable[None]]


async def start_app(ctx: DemoContext) -> None:
    node = shutil.which("node")
    if node is None:
        raise InvalidInput("node is not on PATH: install Node.js (or run bash dev/setup.sh) to run the demo.")
    if not ctx.app.exists():
        raise InvalidInput(f"{ctx.app} is missing: run the demo from a heapsnap checkout or pass --app.")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    log = private_open(ctx.out_dir / "leaky-app.log", "ab")
    _on_exit(ctx, log.close)
    # --inspect-port=0 opens no inspector: it only makes SIGUSR1 open it on a free port
    # rather than 9229, which another process (or another demo) may hold.
    ctx.process = await asyncio.create_subprocess_exec(
        node,
        "--inspect-port=127.0.0.1:0",
        str(ctx.app),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env={**os.environ, "PORT": "0"},
    )
    assert ctx.process.stdout is not None
    line = await asyncio.wait_for(ctx.process.stdout.readline(), 30)
    match = re.search(rb"ready (\d+)", line)
    if match is None:
        raise InvalidInput(f"{ctx.app} did not start: {line!r}")
    ctx.port = int(match.group(1))
    print(f"   started {ctx.app.name} as pid {ctx.process.pid} on port {ctx.port} (no inspector open)")


def _fetch(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        body: bytes = response.read()
        return body


async def warm_up(ctx: DemoContext) -> None:
    assert ctx.port is not None
    last = b""
    for _ in range(ctx.requests):
        last = await asyncio.to_thread(_fetch, ctx.port, "/work")
    print(f"   sent {ctx.requests} requests: {last.decode()}")


async def _traffic(ctx: DemoContext, sent: list[int], pause: float = 0.05) -> None:
    """Requests to /work until cancelled, a few a second: the feature under suspicion keeps running.

    A failed request is only fatal when the app has exited (a loaded machine may reset one).
    """
    assert ctx.process is not None and ctx.port is not None
    while True:
        try:
            await asyncio.to_thread(_fetch, ctx.port, "/work")
            sent[0] += 1
        except OSError as error:
            sent[1] += 1
            if ctx.process.returncode is not None:
                raise InvalidInput(
                    f"the leaky app exited with code {ctx.process.returncode} ({error}): see leaky-app.log"
                ) from None
        await asyncio.sleep(pause)


async def capture_series_with_traffic(ctx: DemoContext) -> None:
    assert ctx.process is not None and ctx.port is not None
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = ("baseline", "target", "final")
    paths = [ctx.out_dir / f"leaky-app-{stamp}-{n}-{name}.heapsnapshot" for n, name in enumerate(names, 1)]
    sent = [0, 0]
    traffic = asyncio.create_task(_traffic(ctx, sent))
    try:
        ctx.results = await capture_series(
            LocalHost(),
            lambda index: FileSink(paths[index]),
            count=len(paths),
            interval_seconds=ctx.interval,
            selector=ProcessSelector(pid=ctx.process.pid),
            options=CaptureOptions(method="inspector"),
        )
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    for name, result in zip(names, ctx.results, strict=True):
        print(
            f"   {name:<8} {result.artifact.uri}  {result.artifact.size_bytes / MiB:,.1f} MiB, "
            f"target paused {result.pause_seconds:.2f} s"
        )
    print(f"   {sent[0]} more requests were served between and during the snapshots")
    if sent[1]:
        print(f"   ({sent[1]} requests failed while the app was paused)")
    for warning in dict.fromkeys(w for result in ctx.results for w in result.warnings):
        print(f"   warning: {warning}")


def _analyze(ctx: DemoContext) -> tuple[Any, Any, Any, Any]:
    from heapsnap.analysis.reader import read_snapshot
    from heapsnap.analysis.views import analyze, find_leaks

    base, target = (read_snapshot(r.artifact.uri, edges=False) for r in ctx.results[:2])
    final = analyze(read_snapshot(ctx.results[2].artifact.uri))
    return base, target, final, find_leaks(base, target, final)


async def what_leaks(ctx: DemoContext) -> None:
    from heapsnap.analysis.render import leaks_table

    base, target, final, report = await asyncio.to_thread(_analyze, ctx)
    ctx.extra.update(base=base, target=target, final=final, report=report)
    shown = type(report)(report.baseline_count, report.target_new, report.leaked, report.suspects[:5])
    print(_indent(leaks_table(shown, paths=1)))
    if report.suspects:
        top = report.suspects[0]
        holder = _holder(top.path)
        print(f"\n   => {top.count:,} {top.name} objects leaked{holder}: this is the leak.")


def _holder(path: list[Any]) -> str:
    """Who holds the leaked object: the last named hop of its retainer path."""
    for step in reversed(path[:-1]):
        if step.edge.startswith("->"):
            return f", held by the variable '{step.edge[2:]}' ({step.class_name}) of a closure's scope"
        if step.edge and not step.edge.isdigit() and not step.edge.startswith("["):
            return f", held by '{step.edge.lstrip('.')}' ({step.class_name})"
    return ""


async def what_grew(ctx: DemoContext) -> None:
    from heapsnap.analysis.render import comparison_table
    from heapsnap.analysis.views import compare

    base, final = ctx.extra["base"], ctx.extra["final"].snapshot
    comparison = compare(base, final, ("baseline", "final"))
    ctx.extra["comparison"] = comparison
    shown = type(comparison)(comparison.method, comparison.reason, comparison.classes[:8])
    print(_indent(comparison_table(shown)))


async def which_code(ctx: DemoContext) -> None:
    from heapsnap.cli.allocations import print_profile
    from heapsnap.engine import sample_allocations

    assert ctx.process is not None
    sent = [0, 0]
    traffic = asyncio.create_task(_traffic(ctx, sent))
    try:
        # Finer than the default: the demo's few requests allocate little, and its cost
        # to the app does not matter here.
        profile = await sample_allocations(
            LocalHost(),
            seconds=max(2.0, 3 * ctx.interval),
            selector=ProcessSelector(pid=ctx.process.pid),
            interval_bytes=64 * 1024,
            top=3,
        )
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    print(f"   {sent[0]} requests were served while their allocations were sampled\n")
    table = io.StringIO()
    print_profile(profile, table)
    print(_indent(table.getvalue()))
    if profile.sites:
        top = profile.sites[0]
        caller = f", called from {top.callers[0]}" if top.callers else ""
        print(f"\n   => what stays alive is allocated in {top.function} ({top.location}){caller}.")


async def write_report(ctx: DemoContext) -> None:
    from heapsnap.analysis import report as pages

    sources = tuple(r.artifact.uri for r in ctx.results)
    snapshots = (ctx.extra["base"], ctx.extra["target"], ctx.extra["final"])
    html = pages.leaks_page((sources[0], sources[1], sources[2]), snapshots, ctx.extra["report"], 25)
    path = ctx.out_dir / "leaks.html"
    with private_open(path, "w", encoding="utf-8") as out:
        out.write(html)
    print(f"   HTML report: {path}")
    suspects = ctx.extra["report"].suspects
    if suspects:
        node = suspects[0].representative_id
        print(f"   Next: heapsnap retainers {sources[2]} --node {node}")


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" if line else "" for line in text.splitlines())


STEPS: list[Step] = [
    Step("Start the leaky app", start_app),
    Step("Warm up", warm_up),
    Step("Take 3 snapshots in one inspector session while requests keep coming", capture_series_with_traffic),
    Step("What leaks: allocated between snapshots 1 and 2, still alive in 3", what_leaks),
    Step("What grew between the first and the last snapshot", what_grew),
    Step("Which code allocates what stays: allocation sampling while requests keep coming", which_code),
    Step("Write the HTML report", write_report),
]


# The operator on the local control plane (``--cluster``), from heapsnap.devcluster.

CRD = shipped("crds/heapsnap.dev_heapsnapshots.yaml")
NAMESPACE = "heapsnap-demo"
BUCKET = "heapsnap-demo"


def _harness() -> Any:
    try:
        # Imported late: only --cluster needs it, and it needs the cryptography package.
        from heapsnap.devcluster import harness
    except ImportError as exc:
        raise InvalidInput(
            f"heapsnap demo --cluster needs the local control plane's extra packages ({exc.name} is "
            "missing): pip install 'heapsnap[cluster]'"
        ) from exc
    return harness


def _on_exit(ctx: DemoContext, action: Callable[[], object]) -> None:
    ctx.extra.setdefault("cleanup", []).append(action)


def check_binaries(harness: Any) -> None:
    missing = harness.missing_binaries()
    if missing:
        raise InvalidInput(
            f"the local control plane is not built ({', '.join(missing)} missing from "
            f"{harness.bin_dir()}): run `bash dev/setup.sh` first."
        )


async def start_control_plane(ctx: DemoContext) -> None:
    harness = _harness()
    check_binaries(harness)
    workdir = Path(tempfile.mkdtemp(prefix="heapsnap-demo-cluster-"))
    _on_exit(ctx, lambda: shutil.rmtree(workdir, ignore_errors=True))
    started = time.monotonic()
    # In the main thread: the harness ties its processes' lives to the thread that forks them.
    cluster = harness.Cluster.start(workdir)
    _on_exit(ctx, cluster.stop)
    ctx.extra["cluster"] = cluster
    print(
        f"   etcd, kube-apiserver, kube-controller-manager and kwok up in {time.monotonic() - started:.0f} s"
    )
    print(f"   kubeconfig {cluster.kubeconfig} (removed with the cluster at the end)")
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshots.heapsnap.dev")
    print(f"   applied {CRD.parent.name}/{CRD.name}")


def _s3_server(root: Path) -> tuple[subprocess.Popen[bytes], S3Config, str]:
    """versitygw from the setup cache, else moto's server from this virtualenv."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cache = Path(os.environ.get("HEAPSNAP_CACHE") or Path.home() / ".cache" / "heapsnap")
    found = sorted(cache.glob("versitygw/*/bin/versitygw"))
    if found:
        name, access, secret = "versitygw", "HEAPSNAPDEMO", "heapsnap-demo-secret"
        argv = [str(found[-1]), "--access", access, "--secret", secret, "-q"]
        argv += ["--port", f"127.0.0.1:{port}", "posix", str(root)]
    else:
        name, access, secret = "moto", "demo", "demo"
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = S3Config(
        bucket=BUCKET,
        endpoint_url=endpoint,
        region="us-east-1",
        force_path_style=True,
        access_key_id=access,
        secret_access_key=secret,
    )
    return server, config, name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def start_storage(ctx: DemoContext) -> None:
    root = Path(ctx.extra["cluster"].workdir) / "s3"
    root.mkdir()
    server, config, name = _s3_server(root)
    _on_exit(ctx, lambda: _stop_process(server))
    client = make_client(config)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                raise InvalidInput(
                    f"the local S3 server ({name}) did not start at {config.endpoint_url}."
                ) from None
            await asyncio.sleep(0.2)
    ctx.extra["s3"] = config
    print(f"   {name} at {config.endpoint_url}, bucket {BUCKET}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def start_app_pod(ctx: DemoContext) -> None:
    cluster = ctx.extra["cluster"]
    cluster.create_namespace(NAMESPACE)
    pod = cluster.start_node_pod(NAMESPACE, "leaky-app", script=ctx.app.read_text(), env={"PORT": "0"})
    _on_exit(ctx, pod.stop)
    ctx.extra["pod"] = pod
    deadline = time.monotonic() + 30
    while (match := re.search(rb"ready (\d+)", pod.output())) is None:
        if pod.popen.poll() is not None or time.monotonic() > deadline:
            raise InvalidInput(f"{ctx.app} did not start in the pod: {pod.output()[-500:]!r}")
        await asyncio.sleep(0.1)
    ctx.port = int(match.group(1))
    print(f"   pod {NAMESPACE}/leaky-app is Running: a local Node.js process, pid {pod.pid}")
    await warm_up(ctx)


async def capture_through_operator(ctx: DemoContext) -> None:
    from heapsnap.controller.demo import capture_with_operator

    cluster = ctx.extra["cluster"]

    shown: list[str] = []

    def on_update(status: dict[str, Any]) -> None:
        conditions: list[dict[str, Any]] = status.get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), {})
        line = f"phase {status.get('phase', '?'):<10} {ready.get('reason', '')}: {ready.get('message', '')}"
        if line not in shown:
            print(f"   {line}", flush=True)
            shown.append(line)

    obj = await capture_with_operator(
        kubeconfig=cluster.kubeconfig,
        namespace=NAMESPACE,
        pod="leaky-app",
        s3=ctx.extra["s3"],
        # Every pod of the local control plane is a process on this machine: name ours.
        pid=ctx.extra["pod"].pid,
        name="leaky-app-demo",
        timeout_seconds=120,
        on_update=on_update,
    )
    ctx.extra["hsnap"] = obj
    print()
    print(_indent(cluster.kubectl("get", "hsnap", "-n", NAMESPACE).stdout.rstrip()))
    status = obj.get("status") or {}
    if status.get("phase") != "Succeeded":
        failure = status.get("failure") or {}
        raise InvalidInput(f"the HeapSnapshot failed: {failure.get('reason')}: {failure.get('message')}")


async def show_status(ctx: DemoContext) -> None:
    status = ctx.extra["hsnap"]["status"]
    artifact, summary = status.get("artifact") or {}, status.get("summary") or {}
    durations = status.get("durations") or {}
    print(f"   artifact  {artifact.get('uri')}  {int(artifact.get('sizeBytes', 0)) / MiB:,.1f} MiB")
    print(f"   sha256    {artifact.get('sha256')}")
    pause, transfer, total = (
        float(durations.get(k, 0)) for k in ("pauseSeconds", "transferSeconds", "totalSeconds")
    )
    print(f"   timing    target paused {pause:.2f} s, transfer {transfer:.2f} s, total {total:.2f} s")
    print(
        f"   summary   {int(summary.get('nodeCount', 0)):,} objects, "
        f"{int(summary.get('totalSize', 0)) / MiB:,.1f} MiB. Top constructors by self size:"
    )
    for entry in (summary.get("topConstructors") or [])[:8]:
        print(
            f"     {entry['name'][:40]:<40} {int(entry['count']):>10,} "
            f"{int(entry['selfSize']) / MiB:>8.2f} MiB"
        )


CLUSTER_STEPS: list[Step] = [
    Step("Start the local control plane and apply the HeapSnapshot CRD", start_control_plane),
    Step("Start a local S3-compatible server", start_storage),
    Step("Start the leaky app as a pod, and warm it up", start_app_pod),
    Step(
        "Create a HeapSnapshot; the operator captures the pod through the API server",
        capture_through_operator,
    ),
    Step("The resource's status", show_status),
]


async def run_steps(ctx: DemoContext, steps: list[Step]) -> None:
    try:
        for number, step in enumerate(steps, 1):
            print(f"\n{number}. {step.title}", flush=True)
            await step.run(ctx)
    finally:
        cleanup: list[Callable[[], object]] = ctx.extra.pop("cleanup", [])
        for action in reversed(cleanup):
            with contextlib.suppress(Exception):
                action()
        if ctx.process is not None and ctx.process.returncode is None:
            ctx.process.kill()
            with contextlib.suppress(ProcessLookupError):
                await ctx.process.wait()


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="capture a leaky Node.js app and show what leaks",
        description="Start examples/leaky-app, drive traffic, capture it with no restart and show the leak.",
    )
    parser.add_argument("--out", type=Path, default=Path("heapsnap-demo"), help="where snapshots go")
    parser.add_argument("--requests", type=int, default=20, help="warm-up requests (500 leaked objects each)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="time between the snapshots"
    )
    parser.add_argument("--app", type=Path, default=APP, help="the app to run")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run the operator on the local control plane (needs bash dev/setup.sh)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = DemoContext(app=args.app, out_dir=args.out, requests=args.requests, interval=args.interval)
    if args.cluster:
        check_binaries(_harness())
    _signals.run(run_steps(ctx, CLUSTER_STEPS if args.cluster else STEPS))
    return 0
