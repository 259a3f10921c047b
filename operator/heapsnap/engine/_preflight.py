"""Will the target survive its snapshot? Estimated from its live heap, before capturing.

V8 builds the whole snapshot graph in the target's memory: about 270 bytes per heap
node, measured at 5M and 25M nodes, and generation runs at about 2.5 µs per node on
Node 20 (V8 11.3) and 1.4 µs on Node 22+. The node count is estimated from the used
heap at 37 bytes per node, the mean measured for heaps of small objects (the costly
case): counting objects exactly needs a heap walk, which is what we want to avoid.
"""

from __future__ import annotations

from heapsnap._units import MiB
from heapsnap.engine._agent import NodeProcessInfo, node_major
from heapsnap.engine._cdp import CdpChannel, CdpCommandError
from heapsnap.engine._types import PreflightEstimate
from heapsnap.errors import PreflightRefused

BYTES_PER_NODE = 270
HEAP_BYTES_PER_NODE = 37


def seconds_per_node(node_major: int) -> float:
    return 2.5e-6 if node_major <= 20 else 1.4e-6


def available_memory(info: NodeProcessInfo | None, override: int | None) -> tuple[int | None, str]:
    if override is not None:
        return override, "given by the caller"
    if info is None:
        return None, "not visible"
    if info.memory_max is not None and info.memory_current is not None:
        # Both numbers: which one to change (the limit, or what the process holds) is the reader's call.
        limit, usage = info.memory_max // MiB, info.memory_current // MiB
        return info.memory_max - info.memory_current, f"its cgroup's limit {limit} MiB - usage {usage} MiB"
    if info.mem_available is not None:
        return info.mem_available, "MemAvailable of the machine (no cgroup limit visible)"
    return None, "unknown"


def estimate(
    info: NodeProcessInfo | None,
    *,
    node_major: int,
    heap_used: int | None,
    available_override: int | None,
) -> PreflightEstimate:
    """The estimate from the used heap, else the RSS (an upper bound).

    ``info`` is None for a process seen only through an inspector reachable from here:
    then the used heap is required, and the memory headroom is not visible.
    """
    if heap_used is None and info is None:
        raise ValueError("a process seen only through its inspector needs its used heap")
    if heap_used is not None:
        basis, source = heap_used, f"used heap {heap_used // MiB} MiB / {HEAP_BYTES_PER_NODE} B per node"
    else:
        assert info is not None
        basis = info.rss_bytes
        source = f"VmRSS {info.rss_bytes // MiB} MiB / {HEAP_BYTES_PER_NODE} B per node (upper bound)"
    nodes = basis // HEAP_BYTES_PER_NODE
    available, available_source = available_memory(info, available_override)
    return PreflightEstimate(
        node_count=nodes,
        estimated_bytes=nodes * BYTES_PER_NODE,
        available_bytes=available,
        estimated_pause_seconds=round(nodes * seconds_per_node(node_major), 2),
        source={
            "node_count": source,
            "estimated_bytes": f"{BYTES_PER_NODE} B per node (measured)",
            "available_bytes": available_source,
            "estimated_pause_seconds": f"{seconds_per_node(node_major) * 1e6:.1f} µs/node, "
            + (f"Node {node_major}" if node_major else "Node.js version unknown"),
        },
    )


async def estimate_live(
    channel: CdpChannel, info: NodeProcessInfo, available_override: int | None
) -> PreflightEstimate:
    """The estimate of a process whose inspector is open: its used heap asked through it."""
    try:
        heap_used: int | None = int(await channel.evaluate("process.memoryUsage().heapUsed"))
    except (CdpCommandError, TypeError, ValueError):
        heap_used = None  # the estimate falls back on RSS
    return estimate(
        info, node_major=node_major(info.version), heap_used=heap_used, available_override=available_override
    )


def check(estimate: PreflightEstimate, pid: int, mode: str, warnings: list[str]) -> None:
    if mode == "skip" or estimate.available_bytes is None:
        return
    if estimate.estimated_bytes <= estimate.available_bytes:
        return
    message = (
        f"Process {pid} needs about {estimate.estimated_bytes // MiB} MiB more memory to build its snapshot "
        f"(~{estimate.node_count:,} heap objects x {BYTES_PER_NODE} B) but only "
        f"{max(estimate.available_bytes, 0) // MiB} MiB is available ({estimate.source['available_bytes']}); "
        "it could be OOM-killed. Raise its memory limit, or pass --force (preflight: skip) to capture anyway."
    )
    if mode == "warn":
        warnings.append(message)
        return
    raise PreflightRefused(message)
