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

from heapsnap.cli.capture import ProgressPrinter, print_result
from heapsnap.engine import CaptureOptions, CaptureResult, ProcessSelector, capture
from heapsnap.errors import InvalidInput
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost

__all__ = ["STEPS", "DemoContext", "Step", "register"]

APP = Path(__file__).resolve().parents[3] / "examples" / "leaky-app" / "server.js"


@dataclass
class DemoContext:
    app: Path
    out_dir: Path
    requests: int
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    result: CaptureResult | None = None
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


async def drive_traffic(ctx: DemoContext) -> None:
    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{ctx.port}{path}", timeout=30) as response:
            body: bytes = response.read()
            return body

    last = b""
    for _ in range(ctx.requests):
        last = await asyncio.to_thread(fetch, "/work")
    print(f"   sent {ctx.requests} requests: {last.decode()}")


async def capture_app(ctx: DemoContext) -> None:
    assert ctx.process is not None
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"leaky-app-{time.strftime('%Y%m%d-%H%M%S')}.heapsnapshot"
    ctx.result = await capture(
        LocalHost(),
        FileSink(path),
        selector=ProcessSelector(pid=ctx.process.pid),
        options=CaptureOptions(method="inspector"),
        on_progress=ProgressPrinter(),
    )
    print_result(ctx.result)


def _is_user_class(name: str) -> bool:
    return not name.startswith("(") and " / " not in name and name not in ("Object", "Array", "Function")


async def explain_leak(ctx: DemoContext) -> None:
    assert ctx.result is not None
    summary = ctx.result.summary
    if summary is None:
        print("   (no summary available)")
        return
    suspects = [stat for stat in summary.top_by_count if _is_user_class(stat.name)]
    if not suspects:
        print("   no application class stands out")
        return
    top = suspects[0]
    print(
        f"   {top.name}: {top.count:,} instances, {top.self_size:,} bytes of their own, after "
        f"{ctx.requests} requests ({top.count / max(ctx.requests, 1):.0f} per request): this is the leak."
    )
    print(f"   Next: heapsnap summary {ctx.result.artifact.uri}")


STEPS: list[Step] = [
    Step("Start the leaky app", start_app),
    Step("Drive some traffic", drive_traffic),
    Step("Capture a heap snapshot through the inspector, with no restart", capture_app),
    Step("What leaks", explain_leak),
]


async def run_steps(ctx: DemoContext, steps: list[Step]) -> None:
    try:
        for number, step in enumerate(steps, 1):
            print(f"\n{number}. {step.title}")
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
    parser.add_argument(
        "--requests", type=int, default=200, help="requests to send (500 leaked objects each)"
    )
    parser.add_argument("--app", type=Path, default=APP, help="the app to run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = DemoContext(app=args.app, out_dir=args.out, requests=args.requests)
    asyncio.run(run_steps(ctx, STEPS))
    return 0
