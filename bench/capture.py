"""Capture benchmark: Node's own v8.writeHeapSnapshot() vs heapsnap to a file, to S3, and to S3 gzipped.

Each method on a fresh target of the same size (small objects). Prints wall time, the
target's pause, the time heapsnap adds beyond that pause (median of the rounds), ratios
to writeHeapSnapshot, heapsnap's peak RSS and CPU time (with the agent it ran next to
the target), and the target's peak RSS under each method (VmHWM, reset through
/proc/PID/clear_refs).

    .venv/bin/python -m bench.capture                 # ~180 MB heap (run with -m from the repository root)
    .venv/bin/python -m bench.capture --heap-mb 900   # ~900 MB heap: ~8 GB in the target
    .venv/bin/python -m bench.capture --rounds 3      # each method 3 times in turn: medians
    .venv/bin/python -m bench.capture --methods file,file-redact --rounds 3   # what --redact costs

The machine's own speed varies by 10-20% from one minute to the next: one round is a
sample, not a figure. With rounds, heapsnap's RSS is the highest of all rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.nodeproc import NodeProcess, start_node  # noqa: E402
from tests.support.s3server import start_versitygw  # noqa: E402

TARGET = r"""
const http = require('http');
const v8 = require('v8');
// One heap object per item (shared names, small-integer ids): ~270 B per node to snapshot.
const NAMES = Array.from({ length: 100 }, (_, i) => 'name-' + i);
class Item { constructor(i) { this.id = i; this.name = NAMES[i % 100]; this.next = null; } }
const keep = [];
const goal = Number(process.env.HEAP_MB) * 1024 * 1024;
for (let i = 0; process.memoryUsage().heapUsed < goal; i++) {
  // Arrays of 10,000: one array of millions of elements costs V8 3x more memory to snapshot.
  const part = [];
  for (let j = 0; j < 10000; j++) part.push(new Item(i * 10000 + j));
  keep.push(part);
}
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/write')) {
    const started = process.hrtime.bigint();
    const file = v8.writeHeapSnapshot(decodeURIComponent(req.url.slice('/write?'.length)));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    res.end(JSON.stringify({ file, seconds }));
    return;
  }
  res.end(String(keep.length * 10000));
});
server.listen(0, '127.0.0.1', () => {
  console.log('ready ' + server.address().port + ' heap ' + process.memoryUsage().heapUsed);
});
"""

MiB = 1 << 20


@dataclass
class Row:
    method: str
    wall: float
    pause: float
    size: int
    heapsnap_rss: int | None
    heapsnap_cpu: float | None  # user + system, with the agent runs it waited for
    target_rss: int
    note: str = ""


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", status)
    if match is None:
        raise RuntimeError(f"the target {pid} exited: {status.splitlines()[:3]}")
    return int(match.group(1)) * 1024


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def start_target(heap_mb: int, version: str) -> NodeProcess:
    old_space = max(4096, heap_mb * 4)
    app = start_node(
        TARGET,
        version=version,
        args=[f"--max-old-space-size={old_space}", "--inspect-port=0"],
        env={"HEAP_MB": str(heap_mb)},
        timeout=600,
    )
    reset_peak(app.pid)
    return app


def run_write(heap_mb: int, version: str, out: Path) -> Row:
    app = start_target(heap_mb, version)
    try:
        started = time.monotonic()
        url = f"http://127.0.0.1:{app.port}/write?{out / 'write.heapsnapshot'}"
        with urllib.request.urlopen(url, timeout=3600) as response:
            reply = json.loads(response.read())
        wall = time.monotonic() - started
        size = Path(reply["file"]).stat().st_size
        Path(reply["file"]).unlink()
        return Row("v8.writeHeapSnapshot", wall, reply["seconds"], size, None, None, peak_rss(app.pid))
    finally:
        app.stop()


def run_heapsnap(heap_mb: int, version: str, method: str, args: list[str], env: dict[str, str]) -> Row:
    app = start_target(heap_mb, version)
    try:
        started = time.monotonic()
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "heapsnap.cli",
                "capture",
                "--pid",
                str(app.pid),
                "--force",
                "--json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        if status != 0:
            raise RuntimeError(f"heapsnap failed ({status}): {output[-2000:]!r}")
        result = json.loads(output)
        estimate, summary = result.get("preflight") or {}, result.get("summary") or {}
        nodes, cost = estimate.get("node_count", 0), estimate.get("estimated_bytes", 0) / MiB
        pause, actual = estimate.get("estimated_pause_seconds", 0), summary.get("nodeCount", 0)
        note = f"preflight ~{nodes:,} nodes, ~{cost:,.0f} MiB, ~{pause:.1f} s pause; actual {actual:,} nodes"
        return Row(
            method,
            wall,
            result["pause_seconds"],
            result["artifact"]["size_bytes"],
            usage.ru_maxrss * 1024,
            usage.ru_utime + usage.ru_stime,
            peak_rss(app.pid),
            note,
        )
    except Exception:
        app.stop()
        print(f"target stderr: {app.stderr[-3000:]}", file=sys.stderr)
        raise
    finally:
        app.stop()


def run_round(args: argparse.Namespace, methods: list[str], out: Path, s3: S3Target | None) -> list[Row]:
    rows: list[Row] = []
    if "write" in methods:
        rows.append(run_write(args.heap_mb, args.node, out))
    if "file" in methods:
        rows.append(run_heapsnap(args.heap_mb, args.node, "heapsnap -> file", ["-o", str(out / "h")], {}))
        (out / "h").unlink()
    if "file-redact" in methods:
        rows.append(
            run_heapsnap(
                args.heap_mb, args.node, "heapsnap -> file, --redact", ["-o", str(out / "r"), "--redact"], {}
            )
        )
        (out / "r").unlink()
    if s3 is not None and "s3" in methods:
        rows.append(run_heapsnap(args.heap_mb, args.node, "heapsnap -> S3 (versitygw)", s3.args, s3.env))
    if s3 is not None and "s3-gzip" in methods:
        # The operator's default (spec.storage.compression: gzip); the CLI's with --gzip.
        args_gzip = [*s3.args, "--gzip"]
        rows.append(run_heapsnap(args.heap_mb, args.node, "heapsnap -> S3, gzip", args_gzip, s3.env))
    return rows


@dataclass
class S3Target:
    args: list[str]
    env: dict[str, str]


def median_row(rows: list[Row]) -> Row:
    """The round with the median wall time, with the spread of all rounds in its note."""
    ordered = sorted(rows, key=lambda r: r.wall)
    row = ordered[len(ordered) // 2]
    if len(rows) > 1:
        walls = ", ".join(f"{r.wall:.1f}" for r in rows)
        pauses = ", ".join(f"{r.pause:.1f}" for r in rows)
        row.note = f"rounds: wall {walls} s; pause {pauses} s" + (f"; {row.note}" if row.note else "")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heap-mb", type=int, default=180)
    parser.add_argument("--node", default="20", help="Node.js major version of the target (20, 22, 24, 26)")
    parser.add_argument(
        "--methods",
        default="write,file,s3,s3-gzip",
        help="comma-separated subset of write,file,file-redact,s3,s3-gzip",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every method this many times, in turn; report medians"
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    by_method: dict[str, list[Row]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="heapsnap-bench-", dir=ROOT) as scratch,
        contextlib.ExitStack() as stack,
    ):
        out = Path(scratch)
        s3: S3Target | None = None
        if "s3" in methods or "s3-gzip" in methods:
            # versitygw (Go, posix backend) rather than moto: moto keeps objects in memory
            # and its Python request handling competes with the target for the CPUs.
            (out / "s3").mkdir()
            server = start_versitygw(out / "s3")
            stack.callback(server.process.wait)
            stack.callback(server.process.terminate)
            server.create_bucket("bench")
            s3 = S3Target(
                [
                    "--s3",
                    "s3://bench/",
                    "--s3-endpoint",
                    server.endpoint,
                    "--s3-path-style",
                    "--s3-region",
                    "us-east-1",
                ],
                {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key},
            )
        for number in range(args.rounds):
            for row in run_round(args, methods, out, s3):
                by_method.setdefault(row.method, []).append(row)
                print(
                    f"round {number + 1}: {row.method}: wall {row.wall:.1f} s, pause {row.pause:.1f} s",
                    flush=True,
                )
    rows = [median_row(group) for group in by_method.values()]
    base = next((r for r in rows if r.method.startswith("v8.")), None)
    print(
        f"\nNode {args.node}, target heap ~{args.heap_mb} MB of small objects, "
        f"snapshot {rows[0].size / MiB:,.0f} MiB"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    # What heapsnap adds beyond the target's pause moves less than the pause itself does.
    header = f"{'method':<28}{'wall s':>9}{'pause s':>9}{'beyond s':>10}{'x write':>9}"
    header += f"{'heapsnap RSS':>14}{'CPU s':>7}{'target peak':>13}{'x write':>9}"
    print(header)
    for row in rows:
        ratio = f"{row.wall / base.wall:.2f}" if base else "-"
        rss_ratio = f"{row.target_rss / base.target_rss:.3f}" if base else "-"
        own = (
            f"{max(r.heapsnap_rss or 0 for r in by_method[row.method]) / MiB:,.0f} MiB"
            if row.heapsnap_rss
            else "-"
        )
        cpu = f"{row.heapsnap_cpu:.1f}" if row.heapsnap_cpu is not None else "-"
        beyond_pause = statistics.median(r.wall - r.pause for r in by_method[row.method])
        beyond = "-" if row is base else f"{beyond_pause:.1f}"
        print(
            f"{row.method:<28}{row.wall:>9.1f}{row.pause:>9.1f}{beyond:>10}{ratio:>9}{own:>14}{cpu:>7}"
            f"{row.target_rss / MiB:>9,.0f} MiB{rss_ratio:>9}"
        )
    for row in rows:
        if row.note:
            print(f"{row.method}: {row.note}")


if __name__ == "__main__":
    main()
