"""Writes operator/heapsnap/analysis/_node_globals.py: the globals of a fresh Node.js per
major, from a snapshot of each release the tests use. Run: .venv/bin/python dev/node-globals.py"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.nodeproc import NODE_VERSIONS, node_binary

from heapsnap.analysis.heuristics import fresh_node_globals

out = Path(__file__).resolve().parents[1] / "operator" / "heapsnap" / "analysis" / "_node_globals.py"
lines = [
    '"""Own properties of the global object of a fresh Node.js, per major: written by',
    "dev/node-globals.py from a snapshot of a process running a script file that only writes",
    'the snapshot; tests/analysis/test_heuristics.py checks them against each release."""',
    "",
    "BASELINES: dict[int, frozenset[str]] = {",
]
for major in NODE_VERSIONS:
    version, names = fresh_node_globals(node_binary(major))
    lines.append(f"    # {version}")
    lines.append(f"    {int(major)}: frozenset(")
    lines.append("        {")
    lines += [f"            {name!r}," for name in sorted(names)]
    lines.append("        }")
    lines.append("    ),")
lines.append("}")
out.write_text("\n".join(lines) + "\n")
print(out)
