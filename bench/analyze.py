"""heapsnap vs memlab on the same heap snapshots: parse + dominators + retained sizes.

    .venv/bin/python bench/analyze.py                 # both sizes (the large one needs ~8 GB free)
    .venv/bin/python bench/analyze.py --sizes small

Each tool runs in its own child process; wall time and that child's peak RSS (wait4)
are printed with their ratios. Snapshots are made once with v8.writeHeapSnapshot() into
$HEAPSNAP_CACHE/bench and reused. heapsnap's compiled loops are cached on disk by a
warm-up run first, as they are after any first use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap"))
MEMLAB = CACHE / "memlab" / "2.0.5"
#: Objects per size: about 330 MiB and 1.7 GiB files (123 bytes of JSON per object).
SIZES = {"small": 2_700_000, "large": 14_000_000}

_HEAPSNAP = """
import json, sys, time
from heapsnap.analysis.graph import dominators
from heapsnap.analysis.reader import read_snapshot
started = time.perf_counter()
snapshot = read_snapshot(sys.argv[1])
parsed = time.perf_counter()
result = dominators(snapshot)
done = time.perf_counter()
print(json.dumps({"nodes": snapshot.node_count, "parse": parsed - started, "dominators": done - parsed,
                  "rootRetained": float(result.retained[snapshot.root])}))
"""


@dataclass
class Run:
    wall: float
    rss_mib: float
    detail: dict[str, float]


def measure(command: list[str]) -> Run:
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, stdout=out, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if status != 0:
        raise SystemExit(f"{command[0]} failed ({status}): {text}")
    return Run(wall, usage.ru_maxrss / 1024, json.loads(text.strip().splitlines()[-1]))


def snapshot(size: str) -> Path:
    path = CACHE / "bench" / f"small-objects-{SIZES[size]}.heapsnapshot"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        print(f"writing {path} ...", flush=True)
        subprocess.run(
            [
                "node",
                "--max-old-space-size=16384",
                str(ROOT / "bench" / "make_snapshot.js"),
                str(SIZES[size]),
                str(partial),
            ],
            check=True,
        )
        partial.rename(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="small,large", help="comma-separated: small, large")
    args = parser.parse_args()
    python = [sys.executable, "-c", _HEAPSNAP]
    memlab = ["node", "--max-old-space-size=16384", str(ROOT / "bench" / "memlab_dominators.js"), str(MEMLAB)]
    warm = snapshot("small") if "small" in args.sizes else snapshot(args.sizes.split(",")[0])
    print(f"warm-up (compiles and caches heapsnap's loops) on {warm.name}", flush=True)
    measure([*python, str(warm)])
    rows = []
    for size in args.sizes.split(","):
        path = snapshot(size)
        mib = path.stat().st_size / 2**20
        ours = measure([*python, str(path)])
        theirs = measure([*memlab, str(path)])
        if abs(ours.detail["rootRetained"] - theirs.detail["rootRetained"]) > 0:
            print(
                f"note: total retained differs: {ours.detail['rootRetained']} vs "
                f"{theirs.detail['rootRetained']}"
            )
        rows.append((size, mib, int(ours.detail["nodes"]), ours, theirs))
        print(
            f"{size}: {mib:,.0f} MiB, {int(ours.detail['nodes']):,} nodes\n"
            f"  heapsnap  {ours.wall:6.1f} s  (parse {ours.detail['parse']:.1f} + dominators "
            f"{ours.detail['dominators']:.1f})  peak RSS {ours.rss_mib:7,.0f} MiB\n"
            f"  memlab    {theirs.wall:6.1f} s  (parse {theirs.detail['parse']:.1f} + dominators "
            f"{theirs.detail['dominators']:.1f})  peak RSS {theirs.rss_mib:7,.0f} MiB\n"
            f"  ratio     time {ours.wall / theirs.wall:.2f}x   memory {ours.rss_mib / theirs.rss_mib:.2f}x"
            "   (target: at most 0.50x each)",
            flush=True,
        )
    failed = [r for r in rows if r[3].wall > 0.5 * r[4].wall or r[3].rss_mib > 0.5 * r[4].rss_mib]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
