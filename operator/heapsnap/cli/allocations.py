"""``heapsnap allocations``: which code allocated the memory that stays alive.

V8's sampling heap profiler, run through the process's inspector for a while: cheap
enough for production, and it names functions and lines, which a heap snapshot cannot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from heapsnap._priority import yield_cpu
from heapsnap._private import private_open
from heapsnap._units import MiB
from heapsnap.analysis.render import human_size
from heapsnap.cli import _signals
from heapsnap.cli.capture import ProgressPrinter
from heapsnap.engine import AllocationProfile, CaptureOptions, ProcessSelector, sample_allocations
from heapsnap.engine._sampling import DEFAULT_INTERVAL
from heapsnap.errors import InvalidInput
from heapsnap.transports.local import LocalHost

__all__ = ["print_profile", "register"]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "allocations",
        help="which functions allocated the memory that stays alive (sampling, for a while)",
        description="Sample a running Node.js process's allocations with V8's sampling heap "
        "profiler and list the functions whose allocations are still alive at the end, with "
        "their callers: run it while memory grows to find the code that allocates the leak.",
    )
    parser.add_argument("--pid", type=int, required=True, help="pid of a Node.js process on this machine")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to sample (default 30)")
    parser.add_argument(
        "--interval-bytes",
        type=int,
        default=DEFAULT_INTERVAL,
        metavar="BYTES",
        help=f"one sample per this many bytes allocated, on average (default {DEFAULT_INTERVAL}); "
        "smaller is finer and costs the process more",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="do not collect garbage before reading the samples (garbage then counts as alive)",
    )
    parser.add_argument("--worker", type=int, metavar="THREAD_ID", help="sample this worker thread instead")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE.heapprofile",
        help="also save the profile for Chrome DevTools",
    )
    parser.add_argument("--top", type=int, default=15, metavar="N", help="sites to show (default 15)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up this long after sampling ends"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InvalidInput(f"--top must be at least 1, not {args.top}")
    if args.output is not None and not args.output.parent.is_dir():
        raise InvalidInput(f"-o {str(args.output)!r}: directory {str(args.output.parent)!r} does not exist")
    yield_cpu()
    profile = _signals.run(
        sample_allocations(
            LocalHost(),
            seconds=args.seconds,
            selector=ProcessSelector(pid=args.pid),
            options=CaptureOptions(timeout_seconds=args.timeout, worker=args.worker),
            interval_bytes=args.interval_bytes,
            collect_garbage=not args.no_gc,
            top=args.top,
            on_progress=ProgressPrinter(),
        )
    )
    if args.output is not None:
        _save(args.output, profile.profile)
    if args.json:
        json.dump(profile.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print_profile(profile)
        if args.output is not None:
            print(f"\nprofile    {args.output} (Chrome DevTools: Memory > Load profile)")
    return 0


def _save(path: Path, profile: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.part")
    try:
        with private_open(partial, "w", encoding="utf-8") as out:
            out.write(json.dumps(profile))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def print_profile(profile: AllocationProfile, stream: TextIO = sys.stdout) -> None:
    target = profile.target
    thread = f", worker thread {target.worker}" if target.worker is not None else ""
    print(f"target     pid {target.pid}{thread}, node {target.node_version}", file=stream)
    gc = (
        "after a full garbage collection" if profile.collected_garbage else "without collecting garbage first"
    )
    print(
        f"sampled    {profile.seconds:.1f} s, one sample per {profile.interval_bytes:,} bytes allocated; "
        f"{profile.live_bytes / MiB:,.1f} MiB of it still alive {gc}",
        file=stream,
    )
    for warning in profile.warnings:
        print(f"warning    {warning}", file=stream)
    if not profile.sites:
        print("\nNothing allocated while sampling is still alive.", file=stream)
        return
    print(f"\n{'Live':>10}  {'Share':>6}  Function (location), called from", file=stream)
    for site in profile.sites:
        share = 100.0 * site.live_bytes / profile.live_bytes if profile.live_bytes else 0.0
        print(
            f"{human_size(site.live_bytes):>10}  {share:5.1f}%  {site.function} ({site.location})",
            file=stream,
        )
        if site.callers:
            print(f"{'':>20}< {' < '.join(site.callers[:3])}", file=stream)
