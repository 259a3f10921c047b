"""One HeapSnapshot's capture, start to finish, with no kopf in sight.

``CaptureRun.execute`` is safe to call again for the same resource at any time (after a
retry or an operator restart): a finished resource is left alone; one whose recorded
step shows the target may already have been touched (inspector opened, signal sent) is
failed with ``OperatorRestarted`` after its upload is removed, so the target is never
signalled twice; one that never got that far simply starts over. The inspector heapsnap
opened in the target (its port is in ``status.target.inspectorPort``) is closed in both
cases.

An operator that is stopped (SIGTERM: kopf cancels the handler) during a capture cleans up
the same way itself, within ``STOP_BUDGET_SECONDS``, and fails the resource with
``OperatorStopped`` before it exits. When the target is still too busy (V8 writing the
snapshot) for its inspector to close in time, the resource keeps its recorded step and
port and the next operator finishes the job (``OperatorRestarted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from heapsnap.controller.metrics import Metrics
from heapsnap.errors import (
    ActivationError,
    CaptureError,
    CaptureTimeout,
    HeapsnapError,
    PodError,
    TargetError,
    TransportError,
)
from heapsnap.k8s import conditions as c
from heapsnap.k8s.objects import ResolvedTarget, ResourceGone, check_running, resolve
from heapsnap.k8s.types import HeapSnapshotSpec, TargetSpec, object_keys, parse_spec

logger = logging.getLogger(__name__)

# Steps after which the target may carry our marks (inspector open, signal sent).
SIDE_EFFECT_STEPS = frozenset({"activating", "signalling", "generating", "transferring", "done"})
_PROGRESS_INTERVAL = 1.0
_POD_POLL_SECONDS = 2.0
# How long a failed capture waits for the pod's status to explain it: a real kubelet reports
# a container's death (an OOM kill, say) after its next relist (1 s) and status sync.
_FATE_SETTLE_SECONDS = 6.0
# A target still busy writing the snapshot the dead capturer asked for answers only after it.
_CLOSE_INSPECTOR_SECONDS = 120.0
# A stopping operator's clean-up ends within this, so it exits inside the pod's grace period
# (the chart's is 30 s; kopf cancels the handlers 2 s after SIGTERM).
STOP_BUDGET_SECONDS = 20.0
# Above this the operator leaves comparison and leak analysis to ``heapsnap diff/leaks``.
ANALYSIS_MAX_BYTES = 1 << 30


class ClusterOps(Protocol):
    async def find_pod(self, namespace: str, target: TargetSpec) -> Any: ...

    async def read_snapshot(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def read_pod(self, namespace: str, name: str) -> Any | None: ...

    async def read_credentials(self, namespace: str, secret: str) -> dict[str, str]: ...

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...


class Recorder(Protocol):
    def event(self, type_: str, reason: str, message: str) -> None: ...


class Backends(Protocol):
    """The engine, the sink and the transport, injected so each layer can be tested alone."""

    def host(self, namespace: str, target: ResolvedTarget) -> Any: ...

    def s3_config(self, spec: HeapSnapshotSpec, credentials: Mapping[str, str]) -> Any: ...

    def sink(self, config: Any, key: str, *, gzip: bool) -> Any: ...

    async def abort_uploads(self, config: Any, key: str) -> None: ...

    async def delete_object(self, config: Any, key: str) -> None: ...

    async def close_inspector(self, host: Any, pid: int, port: int) -> bool: ...

    async def capture(
        self, host: Any, sink: Any, spec: HeapSnapshotSpec, on_progress: Callable[[Any], Awaitable[None]]
    ) -> Any: ...

    async def capture_series(
        self,
        host: Any,
        sinks: Sequence[Any],
        spec: HeapSnapshotSpec,
        on_progress: Callable[[Any], Awaitable[None]],
    ) -> list[Any]: ...

    async def analyze(
        self, spec: HeapSnapshotSpec, credentials: Mapping[str, str], request: Mapping[str, Any]
    ) -> dict[str, Any]: ...


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class Limits:
    """One capture per target pod, and at most ``max_concurrent`` in all, in this process."""

    max_concurrent: int
    _slots: asyncio.Semaphore | None = None
    _pods: dict[str, asyncio.Lock] = field(default_factory=dict)
    active: int = 0
    peak: int = 0
    waiting: int = 0  # for another capture of the same pod, or for a slot

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        return self._slots

    def pod_lock(self, pod_uid: str) -> asyncio.Lock:
        return self._pods.setdefault(pod_uid, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def hold(self, pod_uid: str, on_wait: Callable[[str], Awaitable[None]]) -> AsyncIterator[None]:
        lock = self.pod_lock(pod_uid)
        self.waiting += 1  # until both the pod's lock and a slot are held
        holding = False
        try:
            if lock.locked():
                await on_wait("Waiting for another HeapSnapshot of the same pod to finish.")
            async with lock:
                if self.slots.locked():
                    await on_wait(f"Waiting for a capture slot ({self.max_concurrent} run at a time).")
                async with self.slots:
                    self.waiting -= 1
                    holding = True
                    self.active += 1
                    self.peak = max(self.peak, self.active)
                    try:
                        yield
                    finally:
                        self.active -= 1
        finally:
            if not holding:
                self.waiting -= 1
        if not lock.locked() and self._pods.get(pod_uid) is lock:
            del self._pods[pod_uid]


def allocations_status(profile: Any, top: int = 10) -> dict[str, Any]:
    """A series' allocation sampling, as status.allocations: the top sites and their callers."""
    return {
        "seconds": profile.seconds,
        "intervalBytes": profile.interval_bytes,
        "liveBytes": profile.live_bytes,
        "sites": [{**site.to_dict(), "callers": site.callers[:5]} for site in profile.sites[:top]],
    }


def summary_status(summary: Any, top: int = 10) -> dict[str, Any]:
    raw = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    return {
        "nodeCount": raw.get("nodeCount"),
        "edgeCount": raw.get("edgeCount"),
        "totalSize": raw.get("totalSelfSize", raw.get("totalSize")),
        "topConstructors": [
            {"name": s.get("name"), "count": s.get("count"), "selfSize": s.get("selfSize")}
            for s in (raw.get("topBySize") or raw.get("topConstructors") or [])[:top]
        ],
    }


class CaptureRun:
    """Drives one resource through resolve, capture and upload, writing status as it goes."""

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        cluster: ClusterOps,
        backends: Backends,
        recorder: Recorder,
        limits: Limits,
        metrics: Metrics | None = None,
    ) -> None:
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int = int(meta.get("generation") or 1)
        self.raw_spec: Mapping[str, Any] = body.get("spec") or {}
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.status.pop("kopf", None)
        self.cluster = cluster
        self.backends = backends
        self.recorder = recorder
        self.limits = limits
        self.metrics = metrics
        self._last_progress = 0.0
        self._credentials: dict[str, str] = {}
        self._stopping_since: float | None = None

    # -- status --------------------------------------------------------------------

    def _condition(self, type_: str, status: c.ConditionStatus, reason: str, message: str) -> None:
        self.status["conditions"] = c.set_condition(
            self.status.get("conditions") or [],
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
        )
        self.status["phase"] = c.derive_phase(self.status["conditions"])
        self.status["observedGeneration"] = self.generation

    async def save(self) -> None:
        await self.cluster.patch_status(self.namespace, self.name, self.status)

    async def _fail(self, error: HeapsnapError, step_condition: str | None) -> None:
        if step_condition is not None:
            self._condition(step_condition, "False", error.reason, error.message)
        self._condition(c.READY, "False", error.reason, error.message)
        self.status["failure"] = {"reason": error.reason, "message": error.message}
        self.status["completionTime"] = c.now_rfc3339()
        await self.save()
        self.recorder.event("Warning", error.reason, error.message)
        if self.metrics is not None:
            self.metrics.failed(self.namespace, error.reason)

    # -- the flow ------------------------------------------------------------------

    async def execute(self) -> None:
        if c.is_finished(self.status):
            return
        try:
            spec = parse_spec(self.raw_spec)
        except HeapsnapError as error:
            await self._fail(error, None)
            return
        if self._touched():
            await self._abandon(spec)
            return
        self.status.setdefault("startTime", c.now_rfc3339())
        step_condition: str | None = c.TARGET_RESOLVED
        try:
            pod = await self.cluster.find_pod(self.namespace, spec.target)
            target = resolve(pod, spec.target)
            config = await self._storage(spec)
            keys = object_keys(spec, self.namespace, self.name, self.uid)
            async with self.limits.hold(target.uid, self._waiting):
                self._resolved(target, keys[0])
                await self.save()
                self.recorder.event("Normal", "TargetResolved", self._target_words(target))
                step_condition = c.CAPTURED
                results = await self._capture(spec, target, config, keys)
                # Analysed before Ready, so a Succeeded resource already says all it will say.
                await self._analyze(spec, results)
                await self._succeeded(results)
        except HeapsnapError as error:
            await self._fail(await self._closed_after(error), step_condition)
        except ResourceGone:
            raise
        except asyncio.CancelledError:
            # kopf cancels handlers when the operator stops; untouched ones start over later.
            if self._touched():
                await self._stopped(spec)
            raise
        except Exception as error:
            if not self._touched():
                raise  # nothing touched the target yet: let the handler retry
            logger.exception("capture of %s/%s failed", self.namespace, self.name)
            await self._fail(HeapsnapError(f"The capture failed unexpectedly: {error}"), step_condition)

    def _stop_left(self) -> float:
        """Seconds left of the stopping operator's clean-up budget (counted from the first call)."""
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        return max(0.5, self._stopping_since + STOP_BUDGET_SECONDS - time.monotonic())

    def _touched(self) -> bool:
        """Whether the target may carry our marks: then the capture is never started again."""
        opened = (self.status.get("target") or {}).get("inspectorPort") is not None
        return opened or self.status.get("step") in SIDE_EFFECT_STEPS

    async def _waiting(self, message: str) -> None:
        self._condition(c.READY, "Unknown", "Waiting", message)
        await self.save()

    async def _storage(self, spec: HeapSnapshotSpec) -> Any:
        if spec.s3.credentials_secret:
            self._credentials = await self.cluster.read_credentials(
                self.namespace, spec.s3.credentials_secret
            )
        return self.backends.s3_config(spec, self._credentials)

    @staticmethod
    def _target_words(target: ResolvedTarget) -> str:
        return f"Pod {target.pod}, container {target.container}, on node {target.node or 'unknown'}."

    def _resolved(self, target: ResolvedTarget, key: str) -> None:
        self.status["key"] = key
        self.status["target"] = {
            "pod": target.pod,
            "podUID": target.uid,
            "container": target.container,
            "node": target.node,
            "restartCount": target.restart_count,
        }
        self.status["step"] = "probing"
        self._condition(c.TARGET_RESOLVED, "True", "TargetResolved", self._target_words(target))
        self._condition(c.READY, "Unknown", "Capturing", "Capturing the heap snapshot.")

    async def _capture(
        self, spec: HeapSnapshotSpec, target: ResolvedTarget, config: Any, keys: list[str]
    ) -> list[Any]:
        host = self.backends.host(self.namespace, target)
        sinks = [self.backends.sink(config, key, gzip=spec.compression == "gzip") for key in keys]
        if spec.transfer == "auto" and target.ephemeral_storage_limited:
            # The container's free space hides its ephemeral-storage limit: do not write there.
            spec = dataclasses.replace(spec, transfer="stream")
        if spec.series is None:
            work = asyncio.ensure_future(self._one(host, sinks[0], spec))
        else:
            work = asyncio.ensure_future(self.backends.capture_series(host, sinks, spec, self._on_progress))
        watch = asyncio.ensure_future(self._watch_pod(target))
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()  # raises the pod's fate
            if not work.cancelled() and work.exception() is not None:
                # The engine may notice first that the pod is gone (an exec answered 404,
                # the container's processes were killed with it): the pod's fate is the
                # better explanation than what the engine saw, once the kubelet reported it.
                fate = await self._settled_fate(target, work.exception())
                if fate is not None:
                    raise fate from work.exception()
            return work.result()
        except TimeoutError:
            await self._discard(work, config, keys)
            raise CaptureTimeout(
                f"The capture did not finish within spec.timeoutSeconds ({spec.timeout_seconds} s); "
                "large heaps need more: create a new HeapSnapshot with a higher timeoutSeconds."
            ) from None
        except BaseException as error:
            stopping = isinstance(error, asyncio.CancelledError)
            await self._discard(work, config, keys, wait=self._stop_left() if stopping else None)
            raise
        finally:
            watch.cancel()
            with contextlib.suppress(BaseException):
                await watch

    async def _discard(
        self, work: asyncio.Future[Any], config: Any, keys: list[str], wait: float | None = None
    ) -> None:
        """Stop the engine and make sure no upload or object of this resource outlives it.

        ``wait`` bounds the engine's own clean-up (closing the inspector waits for a target
        that is still writing the snapshot); None waits for it to end.
        """
        work.cancel()
        await asyncio.wait({work}, timeout=wait)
        if not work.done():
            logger.warning("the engine's clean-up of %s/%s outlasted %.0f s", self.namespace, self.name, wait)
            work.cancel()
            await asyncio.wait({work}, timeout=1.0)
        if work.done() and not work.cancelled():
            work.exception()  # retrieved: the failure that ended the capture is reported elsewhere
        for key in keys:
            with contextlib.suppress(Exception):
                await self.backends.abort_uploads(config, key)
            if len(keys) > 1:  # earlier snapshots of a failed series are not kept
                with contextlib.suppress(Exception):
                    await self.backends.delete_object(config, key)

    async def _one(self, host: Any, sink: Any, spec: HeapSnapshotSpec) -> list[Any]:
        return [await self.backends.capture(host, sink, spec, self._on_progress)]

    async def _watch_pod(self, target: ResolvedTarget) -> None:
        """Return (by raising) only when the target pod went away or its container restarted."""
        while True:
            await asyncio.sleep(_POD_POLL_SECONDS)
            fate = await self._pod_fate(target)
            if fate is not None:
                raise fate

    async def _settled_fate(self, target: ResolvedTarget, error: BaseException | None) -> PodError | None:
        """The pod's fate after the engine failed with ``error``. Input and refusals are
        the engine's own verdicts; other failures wait briefly for the kubelet's word."""
        maybe_pod = isinstance(error, CaptureError | TargetError | TransportError | ActivationError)
        settle = _FATE_SETTLE_SECONDS if maybe_pod else 0.0
        deadline = time.monotonic() + settle
        while True:
            fate: PodError | None = None
            with contextlib.suppress(Exception):
                fate = await self._pod_fate(target)
            if fate is not None or time.monotonic() >= deadline:
                return fate
            await asyncio.sleep(0.5)

    async def _pod_fate(self, target: ResolvedTarget) -> PodError | None:
        """The error to report if the target pod went away or its container restarted."""
        pod = await self.cluster.read_pod(self.namespace, target.pod)
        if pod is None or pod.metadata.uid != target.uid or pod.metadata.deletion_timestamp is not None:
            return PodError(
                f"Pod {target.pod} was deleted during the capture; the partial snapshot was discarded.",
                reason="PodDeleted",
            )
        for status in pod.status.container_statuses or []:
            if status.name == target.container and int(status.restart_count or 0) != target.restart_count:
                ended = status.last_state.terminated if status.last_state else None
                why = f" ({ended.reason}, exit code {ended.exit_code})" if ended and ended.reason else ""
                hint = (
                    " It ran out of memory: raise its memory limit, or keep the preflight on "
                    "(it refuses a capture that would not fit)."
                    if ended is not None and ended.reason == "OOMKilled"
                    else ""
                )
                return PodError(
                    f"Container {target.container} of pod {target.pod} restarted during the capture{why}; "
                    f"the process is gone and the partial snapshot was discarded.{hint}",
                    reason="ContainerRestarted",
                )
        return None

    async def _on_progress(self, progress: Any) -> None:
        phase = str(progress.phase)
        changed = phase != self.status.get("step")
        self.status["step"] = phase
        self.status["progress"] = {
            "percent": progress.percent if progress.percent is not None else None,
            "bytesSent": int(progress.bytes_sent or 0),
            "message": progress.message or "",
        }
        opened = progress.inspector_port
        if opened is not None:
            self._opened_inspector(int(opened), progress)
        if phase == "transferring" and changed:
            self._condition(c.CAPTURED, "True", "Generated", "V8 generated the snapshot; uploading it.")
        now = time.monotonic()
        # Persisting every step change (and the inspector we opened) before returning is what
        # makes restarts safe: the engine awaits this before it touches the target further.
        if changed or opened is not None or now - self._last_progress >= _PROGRESS_INTERVAL:
            self._last_progress = now
            await self.save()
            if changed and phase in ("activating", "signalling", "transferring"):
                self.recorder.event("Normal", phase.capitalize(), progress.message or phase)

    def _opened_inspector(self, port: int, progress: Any) -> None:
        target = self.status.setdefault("target", {})
        target["inspectorPort"] = port
        if progress.pid is not None:
            target["pid"] = int(progress.pid)

    async def _succeeded(self, results: list[Any]) -> None:
        result = results[-1]
        artifact = result.artifact
        target = result.target
        if len(results) > 1:
            self.status["artifacts"] = [
                {
                    "uri": r.artifact.uri,
                    "sizeBytes": r.artifact.size_bytes,
                    "compressedBytes": r.artifact.compressed_bytes,
                    "sha256": r.artifact.sha256,
                    "redacted": r.redacted,
                }
                for r in results
            ]
        recorded = self.status["target"]
        if recorded.get("inspectorPort") is not None and not any(
            "still listening" in w for w in result.warnings
        ):
            recorded["inspectorPort"] = None  # the engine closed it; null removes it in a merge patch
        recorded.update(
            {
                "pid": target.pid,
                "nodeVersion": target.node_version,
                "command": target.command[:512],
                "method": target.method,
                "transfer": target.transfer,
            }
        )
        if target.worker is not None:
            recorded["workerThreadId"] = target.worker
        self.status["artifact"] = {
            "uri": artifact.uri,
            "sizeBytes": artifact.size_bytes,
            "compressedBytes": artifact.compressed_bytes,
            "sha256": artifact.sha256,
            "redacted": result.redacted,
        }
        self.status["durations"] = {
            "pauseSeconds": round(result.pause_seconds, 3),
            "transferSeconds": round(result.transfer_seconds, 3),
            "totalSeconds": round(result.total_seconds, 3),
        }
        if result.summary is not None:
            self.status["summary"] = summary_status(result.summary)
        if result.allocations is not None:
            self.status["allocations"] = allocations_status(result.allocations)
        if result.warnings:
            self.status["warnings"] = list(result.warnings)[:20]
        self.status["step"] = "done"
        self.status["completionTime"] = c.now_rfc3339()
        self.status["progress"] = {
            "percent": 100.0,
            "bytesSent": artifact.compressed_bytes or artifact.size_bytes,
        }
        message = f"Stored {artifact.uri} ({artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]}…)."
        if len(results) > 1:
            message = (
                f"Stored {len(results)} snapshots; the last is {artifact.uri} ({artifact.size_bytes} bytes)."
            )
        self._condition(c.CAPTURED, "True", "Generated", "V8 generated the snapshot.")
        self._condition(c.UPLOADED, "True", "Uploaded", message)
        self._condition(c.READY, "True", "Succeeded", message)
        await self.save()
        self.recorder.event("Normal", "Succeeded", message)
        if self.metrics is not None:
            self.metrics.succeeded(self.namespace, results)

    async def _abandon(self, spec: HeapSnapshotSpec) -> None:
        """A new operator found the capture interrupted: clean up and fail the resource."""
        step = self.status.get("step")
        await self._remove_uploads(spec, step)
        done, inspector = await self._close_inspector(_CLOSE_INSPECTOR_SECONDS)
        if not done:
            inspector += " (restart the container to close it)"
        error = HeapsnapError(
            f"The operator restarted during the capture (step {step}): the partial upload was "
            f"removed, {inspector}, and the target was not signalled again. "
            "Create a new HeapSnapshot to try again.",
            reason="OperatorRestarted",
        )
        await self._fail(error, c.CAPTURED)

    async def _stopped(self, spec: HeapSnapshotSpec) -> None:
        """This operator is stopping (SIGTERM, or its Lease was lost) in the middle of a capture."""
        step = self.status.get("step")
        await self._remove_uploads(spec, step)
        done, inspector = await self._close_inspector(self._stop_left())
        words = (
            f"The operator was stopped during the capture (step {step}; a rollout, a node drain or "
            "a lost Lease): the partial upload was removed"
        )
        if not done:
            # The recorded step and port stay: the next operator closes it and fails the resource.
            message = f"{words}, but {inspector}; the next operator closes it and fails this HeapSnapshot."
            self._condition(c.READY, "Unknown", "OperatorStopped", message)
            await self.save()
            return
        error = HeapsnapError(
            f"{words} and {inspector}. Create a new HeapSnapshot to try again.", reason="OperatorStopped"
        )
        await self._fail(error, c.CAPTURED)

    async def _remove_uploads(self, spec: HeapSnapshotSpec, step: Any) -> None:
        credentials: dict[str, str] = {}
        with contextlib.suppress(HeapsnapError):
            if spec.s3.credentials_secret:
                credentials = await self.cluster.read_credentials(self.namespace, spec.s3.credentials_secret)
        config = self.backends.s3_config(spec, credentials)
        keys = object_keys(spec, self.namespace, self.name, self.uid)
        for key in keys:
            with contextlib.suppress(Exception):
                await self.backends.abort_uploads(config, key)
            if step in ("transferring", "done") or len(keys) > 1:
                with contextlib.suppress(Exception):
                    await self.backends.delete_object(config, key)

    async def _closed_after(self, error: HeapsnapError) -> HeapsnapError:
        """After a failed capture: the engine closes the inspector it opened, unless its
        streams broke with the failure (a kubelet restart cuts exec and port-forward). Then
        it is closed here, trying again while the path to the pod comes back."""
        if (self.status.get("target") or {}).get("inspectorPort") is None:
            return error
        deadline = time.monotonic() + _CLOSE_INSPECTOR_SECONDS
        while True:
            done, inspector = await self._close_inspector(max(1.0, deadline - time.monotonic()))
            if done:
                self.status["target"]["inspectorPort"] = None
                return error
            if time.monotonic() >= deadline:
                return HeapsnapError(f"{error.message} Also, {inspector}.", reason=error.reason)
            await asyncio.sleep(2.0)

    async def _close_inspector(self, limit: float) -> tuple[bool, str]:
        """Close the inspector heapsnap opened, if it may still be open.

        Returns whether none is left open, and words for the failure message.
        """
        recorded = self.status.get("target") or {}
        port, pid = recorded.get("inspectorPort"), recorded.get("pid")
        if port is None:
            return True, "heapsnap had opened no inspector"
        if pid is None:
            return (
                False,
                f"the inspector heapsnap opened on port {port} was left open (its pid is unknown)",
            )
        try:
            pod = await self.cluster.read_pod(self.namespace, str(recorded.get("pod")))
        except Exception as error:  # a failure message must still be written
            return (
                False,
                f"the inspector heapsnap opened on port {port} of pid {pid} was left open "
                f"(the pod could not be read: {error})",
            )
        if pod is None or pod.metadata.uid != recorded.get("podUID"):
            return True, f"the pod is gone, and with it the inspector heapsnap opened on port {port}"
        container = str(recorded.get("container"))
        try:
            restarts = check_running(pod, container)
        except PodError:
            return (
                True,
                f"the container is not running, so the inspector heapsnap opened on port {port} is gone",
            )
        if restarts != recorded.get("restartCount", restarts):
            return True, f"the container restarted, so the inspector heapsnap opened on port {port} is gone"
        target = ResolvedTarget(str(recorded.get("pod")), pod.metadata.uid, container, "", restarts)
        began = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                closed = await self.backends.close_inspector(
                    self.backends.host(self.namespace, target), int(pid), int(port)
                )
            logger.info(
                "closing the inspector on port %s of %s/%s took %.1f s (closed: %s)",
                port, self.namespace, self.name, time.monotonic() - began, closed,
            )  # fmt: skip
        except Exception as error:  # clean-up never crashes the handler
            logger.warning("closing the inspector of %s/%s failed: %r", self.namespace, self.name, error)
            why = (
                f"the target did not answer within {limit:.0f} s, busy writing the snapshot"
                if isinstance(error, TimeoutError)
                else f"closing it failed: {error or type(error).__name__}"
            )
            return False, f"the inspector heapsnap opened on port {port} of pid {pid} was left open ({why})"
        if not closed:
            return False, f"the inspector heapsnap opened on port {port} of pid {pid} is still listening"
        return True, f"the inspector heapsnap opened on port {port} was closed"

    # -- comparison and leak suspects (series, compareTo) ----------------------------

    async def _analyze(self, spec: HeapSnapshotSpec, results: list[Any]) -> None:
        uris = [r.artifact.uri for r in results]
        request: dict[str, Any] = {}
        if spec.series is not None:
            request["compare"] = [uris[0], uris[-1]]
            if len(uris) >= 3:
                request["leaks"] = [uris[0], uris[len(uris) // 2], uris[-1]]
        elif spec.compare_to is not None:
            baseline = await self._baseline(spec.compare_to)
            if baseline is None:
                return
            request["compare"] = [baseline, uris[-1]]
        else:
            return
        largest = max(r.artifact.size_bytes for r in results)
        if largest > ANALYSIS_MAX_BYTES:
            await self._analyzed_false(
                "TooLargeToAnalyze",
                f"Snapshots of {largest} bytes are analysed outside the operator: run "
                f"kubectl heapsnap analyze {self.name} -n {self.namespace} on a machine with memory "
                "for it (about 1.5x the largest snapshot).",
            )
            return
        try:
            found = await self.backends.analyze(spec, self._credentials, request)
        except HeapsnapError as error:
            await self._analyzed_false(error.reason, error.message)
            return
        self.status.update(found)
        parts = []
        if "comparison" in found:
            parts.append(f"compared by {found['comparison'].get('method')}")
        if "leakSuspects" in found:
            suspects = found["leakSuspects"].get("suspects") or []
            top = suspects[0]["name"] if suspects else "none"
            parts.append(f"{len(suspects)} leak suspect classes (top: {top})")
        message = "Analysed: " + ", ".join(parts) + "."
        self._condition(c.ANALYZED, "True", "Analyzed", message)
        await self.save()
        self.recorder.event("Normal", "Analyzed", message)

    async def _baseline(self, name: str) -> str | None:
        other = await self.cluster.read_snapshot(self.namespace, name)
        if other is None:
            await self._analyzed_false(
                "BaselineNotFound", f"spec.compareTo names HeapSnapshot {name}, which does not exist."
            )
            return None
        status = other.get("status") or {}
        uri = (status.get("artifact") or {}).get("uri")
        if status.get("phase") != "Succeeded" or not uri:
            await self._analyzed_false(
                "BaselineNotReady",
                f"spec.compareTo names HeapSnapshot {name}, which is {status.get('phase') or 'Pending'}; "
                "compare with a Succeeded one.",
            )
            return None
        return str(uri)

    async def _analyzed_false(self, reason: str, message: str) -> None:
        self._condition(c.ANALYZED, "False", reason, message)
        await self.save()
        self.recorder.event("Warning", reason, message)


async def run_capture(
    body: Mapping[str, Any],
    *,
    cluster: ClusterOps,
    backends: Backends,
    recorder: Recorder,
    limits: Limits,
    metrics: Metrics | None = None,
) -> None:
    """Entry point for the kopf handler; ends quietly if the resource disappears meanwhile."""
    run = CaptureRun(
        body, cluster=cluster, backends=backends, recorder=recorder, limits=limits, metrics=metrics
    )
    try:
        await run.execute()
    except ResourceGone:
        logger.info("HeapSnapshot %s/%s was deleted during its capture", run.namespace, run.name)
