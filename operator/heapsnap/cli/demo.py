"""``heapsnap demo``: start a leaky Node.js app, capture it with no restart, show the leak.

The demo is a list of steps sharing one ``DemoContext``; each step prints what it does.
A later part (the operator on the local control plane) adds its own steps to ``STEPS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heapsnap.engine import CaptureOptions, CaptureResult, ProcessSelector, capture_series
from heapsnap.errors import InvalidInput
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost

__all__ = ["STEPS", "DemoContext", "Step", "register"]

MiB = 1 << 20
APP = Path(__file__).resolve().parents[3] / "examples" / "leaky-app" / "server.js"


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
    ctx.process = await asyncio.create_subprocess_exec(
        node,
        str(ctx.app),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PORT": "0"},
    )
    assert ctx.process.stdout is not None
    line = await asyncio.wait_for(ctx.process.stdout.readline(), 30)
    match = re.search(rb"ready (\d+)", line)
    if match is None:
        raise InvalidInput(f"{ctx.app} did not start: {line!r}")
    ctx.port = int(match.group(1))
    print(f"   started {ctx.app.name} as pid {ctx.process.pid} on port {ctx.port} (no inspector, no flags)")


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


async def _traffic(port: int, sent: list[int], pause: float = 0.05) -> None:
    """Requests to /work until cancelled, a few a second: the feature under suspicion keeps running."""
    while True:
        await asyncio.to_thread(_fetch, port, "/work")
        sent[0] += 1
        await asyncio.sleep(pause)


async def capture_series_with_traffic(ctx: DemoContext) -> None:
    assert ctx.process is not None and ctx.port is not None
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = ("baseline", "target", "final")
    paths = [ctx.out_dir / f"leaky-app-{stamp}-{n}-{name}.heapsnapshot" for n, name in enumerate(names, 1)]
    sent = [0]
    traffic = asyncio.create_task(_traffic(ctx.port, sent))
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


async def write_report(ctx: DemoContext) -> None:
    from heapsnap.analysis import report as pages

    sources = tuple(r.artifact.uri for r in ctx.results)
    snapshots = (ctx.extra["base"], ctx.extra["target"], ctx.extra["final"])
    html = pages.leaks_page((sources[0], sources[1], sources[2]), snapshots, ctx.extra["report"], 25)
    path = ctx.out_dir / "leaks.html"
    path.write_text(html, encoding="utf-8")
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
    Step("Write the HTML report", write_report),
]


async def run_steps(ctx: DemoContext, steps: list[Step]) -> None:
    try:
        for number, step in enumerate(steps, 1):
            print(f"\n{number}. {step.title}", flush=True)
            await step.run(ctx)
    finally:
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = DemoContext(app=args.app, out_dir=args.out, requests=args.requests, interval=args.interval)
    asyncio.run(run_steps(ctx, STEPS))
    return 0
