"""Work done through one inspector session: a series of snapshots, allocation sampling."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from heapsnap.engine import _sampling
from heapsnap.engine._session import (
    Inspection,
    Reporter,
    deadline,
    inspector_failures,
    inspector_session,
    prepare,
)
from heapsnap.engine._targets import target_kind
from heapsnap.engine._transfers import snapshot
from heapsnap.engine._types import (
    AllocationProfile,
    CaptureOptions,
    CaptureResult,
    ProcessSelector,
    Progress,
    ProgressCallback,
)
from heapsnap.errors import InvalidInput
from heapsnap.sinks.base import Sink
from heapsnap.transports.base import ProcessHost

__all__ = ["capture_series", "sample_allocations"]

T = TypeVar("T")
_ANY_PROCESS = ProcessSelector()
_DEFAULTS = CaptureOptions()


async def capture_series(
    host: ProcessHost,
    sink_factory: Callable[[int], Sink],
    *,
    count: int,
    interval_seconds: float,
    selector: ProcessSelector = _ANY_PROCESS,
    options: CaptureOptions = _DEFAULTS,
    on_progress: ProgressCallback | None = None,
    sample_allocations: int | None = None,
) -> list[CaptureResult]:
    """Take ``count`` snapshots through one inspector session, so node ids stay comparable.

    With ``sample_allocations`` (an interval in bytes), V8's sampling heap profiler runs
    from the first snapshot until just before the last: the last result's
    ``allocations`` names the functions that allocated what is still alive then.
    """
    if count < 1:
        raise InvalidInput(f"count is {count}: a series needs at least one snapshot.")
    target_kind(options)
    if options.method == "signal":
        raise InvalidInput("A series needs the inspector method (ids reset between signal snapshots).")
    if sample_allocations is not None and count < 2:
        raise InvalidInput("Allocation sampling in a series runs between its snapshots: take 2 or more.")
    results: list[CaptureResult] = []
    allocations: AllocationProfile | None = None
    started = 0.0
    report = Reporter(on_progress)
    async with (
        deadline(options.timeout_seconds),
        inspector_session(host, selector, options, report) as inspection,
    ):
        for index in range(count):
            if index:
                await asyncio.sleep(interval_seconds)
            if sample_allocations is not None and index == count - 1:
                allocations = await _sampled(inspection, started, sample_allocations, True)
            sink = sink_factory(index)
            await prepare(sink)
            results.append(await snapshot(inspection, sink, index == count - 1))
            if sample_allocations is not None and index == 0:
                await _sampling_call(inspection, _sampling.start(inspection.cdp, sample_allocations))
                started = time.monotonic()
    for result in results:
        result.warnings[:0] = inspection.session.warnings
    results[-1].allocations = allocations
    return results


async def sample_allocations(
    host: ProcessHost,
    *,
    seconds: float,
    selector: ProcessSelector = _ANY_PROCESS,
    options: CaptureOptions = _DEFAULTS,
    interval_bytes: int = _sampling.DEFAULT_INTERVAL,
    collect_garbage: bool = True,
    top: int = 25,
    on_progress: ProgressCallback | None = None,
) -> AllocationProfile:
    """Sample the allocations of a Node.js process on ``host`` for ``seconds`` (see
    ``_sampling``).

    ``collect_garbage`` runs a full collection before the samples are read, so that
    garbage not yet collected is not reported as alive (it pauses the process as long
    as a major GC does).
    """
    if not 0 < seconds <= 86400:
        raise InvalidInput(f"seconds is {seconds:g}: sample for more than 0 s and at most a day.")
    if not 1 <= interval_bytes <= 1 << 30:
        raise InvalidInput(
            f"interval is {interval_bytes} bytes: give 1 byte to 1 GiB (the default is 524288)."
        )
    target_kind(options)
    if options.method == "signal":
        raise InvalidInput("Allocation sampling needs the inspector: the signal method only takes snapshots.")
    # Nothing is written next to the target: no scratch directory to look for.
    options = dataclasses.replace(options, method="inspector", transfer="stream", preflight="skip")
    limit = None if options.timeout_seconds is None else options.timeout_seconds + seconds
    report = Reporter(on_progress)
    async with deadline(limit), inspector_session(host, selector, options, report) as inspection:
        cdp = inspection.cdp
        await _sampling_call(inspection, _sampling.start(cdp, interval_bytes))
        started = time.monotonic()
        while (left := seconds - (time.monotonic() - started)) > 0:
            if cdp.closed_error is not None:  # the process went away: say so now
                await _sampling_call(inspection, cdp.send("HeapProfiler.stopSampling"))  # raises CdpClosed
            done = 100.0 * (seconds - left) / seconds
            await report(Progress("sampling", percent=round(done, 1), message=f"{left:.0f} s left"))
            await asyncio.sleep(min(1.0, left))
        profile = await _sampled(inspection, started, interval_bytes, collect_garbage, top)
    await report(Progress("done", percent=100.0))
    profile.warnings = list(inspection.session.warnings)
    return profile


async def _sampled(
    inspection: Inspection, started: float, interval_bytes: int, collect_garbage: bool, top: int = 10
) -> AllocationProfile:
    """Stop the sampling ``started`` then, and rank what it found."""
    if collect_garbage:
        await inspection.session.report(Progress("collecting", message="collecting garbage"))
    profile = await _sampling_call(inspection, _sampling.stop(inspection.cdp, collect_garbage))
    live, sites = _sampling.allocation_sites(profile, top)
    return AllocationProfile(
        target=inspection.target,
        seconds=round(time.monotonic() - started, 3),
        interval_bytes=interval_bytes,
        collected_garbage=collect_garbage,
        live_bytes=live,
        sites=sites,
        profile=profile,
    )


async def _sampling_call(inspection: Inspection, call: Awaitable[T]) -> T:
    """A sampling command, its failures said as such."""
    pid = inspection.session.info.pid
    async with inspector_failures(
        inspection,
        exited=f"Process {pid} exited while its allocations were sampled.",
        closed=f"The inspector connection of process {pid} closed",
        refused=f"Process {pid} refused allocation sampling",
    ):
        return await call
