"""Allocation sampling: the function that allocates what stays alive, named with its file
and line, from real Node.js processes; the inspector closed afterwards."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heapsnap.engine import CaptureOptions, ProcessSelector, capture_series, sample_allocations
from heapsnap.engine._sampling import allocation_sites
from heapsnap.errors import InspectorDisabled, InvalidInput, TargetExited
from heapsnap.sinks.file import FileSink
from heapsnap.transports.local import LocalHost
from tests.engine.conftest import listening_ports, read_until
from tests.support.nodeproc import LEAKY_APP, NodeProcess

pytestmark = pytest.mark.timeout(300)
StartNode = Callable[..., NodeProcess]

#: plantLeak (line 4) keeps what it allocates; churn's objects die young; line 8 calls both.
GROWER = """const http = require('http');
class LeakyThing { constructor(i) { this.id = i; this.payload = 'leak-' + i; } }
const kept = [];
function plantLeak() {
  for (let i = 0; i < 500; i++) kept.push(new LeakyThing(kept.length));
}
function churn() { const s = []; for (let i = 0; i < 2000; i++) s.push({ i }); return s.length; }
setInterval(() => { plantLeak(); churn(); }, 5);
const server = http.createServer((req, res) => res.end(String(kept.length)));
server.listen(0, '127.0.0.1', () => console.log('ready ' + server.address().port));
"""


def frame(name: str, line: int, size: int, ident: int, children: list[dict[str, Any]]) -> dict[str, Any]:
    call = {"functionName": name, "url": "/app.js" if name else "", "lineNumber": line - 1, "columnNumber": 0}
    return {"callFrame": call, "selfSize": size, "id": ident, "children": children}


def test_sites_add_up_a_function_reached_by_several_paths() -> None:
    # (root) -> a -> leak (3000 B); (root) -> b -> leak (1000 B) and b itself (500 B).
    leak_via_a = frame("leak", 9, 3000, 3, [])
    leak_via_b = frame("leak", 9, 1000, 5, [])
    head = frame("(root)", 0, 0, 1, [frame("a", 1, 0, 2, [leak_via_a]), frame("b", 2, 500, 4, [leak_via_b])])
    samples = [{"nodeId": 3, "size": 64, "ordinal": n} for n in range(3)] + [
        {"nodeId": 5, "size": 64, "ordinal": 9}
    ]
    total, sites = allocation_sites({"head": head, "samples": samples}, top=10)
    assert total == 4500
    leak, b = sites
    assert (leak.function, leak.url, leak.line, leak.live_bytes, leak.samples) == (
        "leak",
        "/app.js",
        9,
        4000,
        4,
    )
    assert leak.callers == ["a (/app.js:1)"], "the heaviest path's callers"
    assert (b.function, b.live_bytes, b.callers) == ("b", 500, [])
    assert allocation_sites({"head": head, "samples": samples}, top=1)[1] == [leak]
    # A deep recursion: its site keeps the 8 nearest callers, innermost first.
    deep = frame("leak", 9, 100, 100, [])
    for depth in range(2000):
        deep = frame(f"f{depth}", depth + 10, 0, 101 + depth, [deep])
    _, (site,) = allocation_sites({"head": frame("(root)", 0, 0, 1, [deep]), "samples": []}, top=5)
    assert site.callers == [f"f{depth} (/app.js:{depth + 10})" for depth in range(8)]


@pytest.mark.parametrize("version", ["20", "24", "26"])
async def test_the_leaking_function_is_named_and_the_process_left_as_found(
    node_process: StartNode, tmp_path: Path, version: str
) -> None:
    script = tmp_path / "grower.js"
    script.write_text(GROWER)
    app = node_process(str(script), version=version)
    phases: list[str] = []

    async def progress(step: Any) -> None:
        phases.append(step.phase)

    profile = await sample_allocations(
        LocalHost(), seconds=2, selector=ProcessSelector(pid=app.pid), top=5, on_progress=progress
    )
    top = profile.sites[0]
    assert (top.function, top.url, top.line) == ("plantLeak", str(script), 4), profile.sites
    assert top.live_bytes > 0.5 * profile.live_bytes > 0 and top.samples > 0
    assert top.callers[0] == f"(anonymous) ({script}:8)", top.callers
    # churn's objects die young: after the collection they are not what holds memory.
    assert all(
        site.live_bytes < 0.1 * profile.live_bytes for site in profile.sites if site.function == "churn"
    )
    assert sum(_self_sizes(profile.profile["head"])) == profile.live_bytes
    assert profile.target.node_version.startswith(f"v{version}.") and profile.collected_garbage
    assert {"activating", "sampling", "collecting", "done"} <= set(phases)
    # Left as found: the inspector heapsnap opened is closed, the process still serves.
    assert await listening_ports(app.pid) == [app.port]
    assert int(app.get()) > 0


async def test_a_series_samples_between_its_first_and_last_snapshots(
    node_process: StartNode, tmp_path: Path
) -> None:
    script = tmp_path / "grower.js"
    script.write_text(GROWER)
    app = node_process(str(script), version="24")
    results = await capture_series(
        LocalHost(),
        lambda index: FileSink(tmp_path / f"s-{index}.heapsnapshot"),
        count=3,
        interval_seconds=1,
        selector=ProcessSelector(pid=app.pid),
        options=CaptureOptions(method="inspector"),
        sample_allocations=64 * 1024,
    )
    assert [r.allocations is None for r in results] == [True, True, False]
    profile = results[-1].allocations
    assert profile is not None and profile.collected_garbage and 1.5 < profile.seconds < 30
    assert (profile.sites[0].function, profile.sites[0].line) == ("plantLeak", 4), profile.sites
    assert await listening_ports(app.pid) == [app.port]


def _self_sizes(node: dict[str, Any]) -> list[int]:
    sizes, pending = [], [node]
    while pending:
        here = pending.pop()
        sizes.append(int(here["selfSize"]))
        pending.extend(here["children"])
    return sizes


def test_cli_table_json_and_devtools_profile(node_process: StartNode, tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "grower.js"
    script.write_text(GROWER)
    app = node_process(str(script))
    saved = tmp_path / "grower.heapprofile"
    argv = [sys.executable, "-m", "heapsnap.cli", "allocations", "--pid", str(app.pid), "--seconds", "1"]
    done = subprocess.run([*argv, "-o", str(saved)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"plantLeak ({script}:4:" in done.stdout and str(saved) in done.stdout
    profile = json.loads(saved.read_text())
    assert {"head", "samples"} <= profile.keys() and profile["samples"]
    done = subprocess.run(
        [*argv, "--json", "--no-gc", "--top", "2"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["collectedGarbage"] is False and len(result["sites"]) <= 2
    assert "plantLeak" in [site["function"] for site in result["sites"]]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


async def test_a_process_that_exits_while_sampled_ends_it_at_once(node_process: StartNode) -> None:
    app = node_process(LEAKY_APP, env={"LEAKY_COUNT": "1000"})
    asyncio.get_running_loop().call_later(1.5, app.popen.kill)
    started = time.monotonic()
    with pytest.raises(TargetExited, match="exited while its allocations were sampled"):
        await sample_allocations(LocalHost(), seconds=60, selector=ProcessSelector(pid=app.pid))
    assert time.monotonic() - started < 15, "not the whole minute"


async def test_ctrl_c_while_sampling_closes_the_inspector(node_process: StartNode, tmp_path: Path) -> None:
    script = tmp_path / "grower.js"
    script.write_text(GROWER)
    app = node_process(str(script))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "heapsnap.cli", "allocations", "--pid", str(app.pid), "--seconds", "60",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stderr is not None
    said = await read_until(child.stderr, "heapsnap: sampling")
    child.send_signal(signal.SIGINT)
    said += (await child.stderr.read()).decode()
    assert await asyncio.wait_for(child.wait(), 60) == 130, said
    assert "Traceback" not in said
    assert await listening_ports(app.pid) == [app.port]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"seconds": 0}, "seconds is 0"),
        ({"seconds": 1, "interval_bytes": 0}, "interval is 0 bytes"),
        ({"seconds": 1, "options": CaptureOptions(method="signal")}, "needs the inspector"),
    ],
)
async def test_bad_input_is_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        await sample_allocations(LocalHost(), selector=ProcessSelector(pid=1), **kwargs)


async def test_activation_disabled_is_refused_with_the_fix(node_process: StartNode) -> None:
    app = node_process(LEAKY_APP, version="24", args=["--disable-sigusr1"], env={"LEAKY_COUNT": "100"})
    with pytest.raises(InspectorDisabled, match="--disable-sigusr1"):
        await sample_allocations(LocalHost(), seconds=1, selector=ProcessSelector(pid=app.pid))
    assert await listening_ports(app.pid) == [app.port]
