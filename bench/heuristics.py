"""Time of each `heapsnap inspect` heuristic on the bench snapshot, apart from parsing.

    .venv/bin/python bench/heuristics.py              # the ~330 MiB snapshot of bench/analyze.py
    .venv/bin/python bench/heuristics.py FILE

Runs in a child process and prints wall time per step and the child's peak RSS (wait4).
The growth step matches the snapshot against itself (ids all common, nothing grows): the
matching work of a two-snapshot series without a second file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analyze import measure, snapshot

_CHILD = """
import json, sys, time
from heapsnap.analysis import heuristics as H
from heapsnap.analysis.graph import shortest_paths
from heapsnap.analysis.reader import read_snapshot
times = {}
def step(name, call):
    started = time.perf_counter()
    value = call()
    times[name] = time.perf_counter() - started
    return value
s = step("parse", lambda: read_snapshot(sys.argv[1]))
step("duplicated strings", lambda: H.duplicated_strings(s))
step("fan-out", lambda: H.top_fan_out(s))
sizes = step("collection sizes", lambda: H.collection_sizes(s))
paths = step("shortest paths", lambda: shortest_paths(s))
step("growth (match 2)", lambda: H.growing_collections([sizes, sizes], s, paths))
step("globals", lambda: H.app_globals(s))
times["nodes"] = s.node_count
times["collections"] = int(sizes.ids.size)
print(json.dumps(times))
"""


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else snapshot("small")
    measure([sys.executable, "-c", _CHILD, str(path)])  # warm-up: numba's cache
    run = measure([sys.executable, "-c", _CHILD, str(path)])
    detail = dict(run.detail)
    nodes, collections = int(detail.pop("nodes")), int(detail.pop("collections"))
    print(
        f"{path.name}: {path.stat().st_size / 2**20:,.0f} MiB, {nodes:,} nodes, {collections:,} collections"
    )
    for name, seconds in detail.items():
        print(f"  {name:20s} {seconds:6.2f} s")
    print(f"  total {run.wall:.1f} s wall, peak RSS {run.rss_mib:,.0f} MiB")
    print(json.dumps(run.detail))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
