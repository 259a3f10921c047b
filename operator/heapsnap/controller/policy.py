"""HeapSnapshotPolicies: captures that start themselves.

A policy never captures: when a trigger fires for a pod it creates an ordinary HeapSnapshot
(owned by the policy, labelled with its name) from ``spec.template``, and the capture
handler does the rest (preflight, S3, analysis, metrics, TTL, deletionPolicy).

One loop (``PolicyController.run``) reconciles every policy every ``interval`` seconds,
level-triggered: each round reads the policy, its pods, their memory and the HeapSnapshots
it owns, decides, acts, and writes what it decided to the policy's status. What must
survive an operator restart is on the resource: each pod's last trigger (cooldown), the
next schedule time, the counts; how many captures are unfinished (maxConcurrent) is read
from the owned HeapSnapshots themselves. Only the growth trigger's window of readings is in
memory: a restarted operator starts a new window, which can delay a growth trigger but
never fires one early.

The time comes from an injected clock, so tests move it instead of waiting.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from heapsnap.controller.metrics import Metrics
from heapsnap.engine._preflight import BYTES_PER_NODE, HEAP_BYTES_PER_NODE
from heapsnap.errors import HeapsnapError
from heapsnap.k8s import conditions as c
from heapsnap.k8s.memory import MemorySource, Reading, Readings
from heapsnap.k8s.policy import POD_ANNOTATION, PolicySpec, Trigger, parse_policy
from heapsnap.k8s.policyops import PolicyCluster, snapshot_name

logger = logging.getLogger(__name__)

MiB = 1 << 20
HEADROOM = "Headroom"
MEMORY_READINGS = "MemoryReadings"
RECENT = 10  # status.recent keeps the last this many HeapSnapshots created
MAX_PODS = 500  # status.pods entries at most


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...


class SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


def objects(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,.0f}"


# -- what the policy sees of a pod ----------------------------------------------------


@dataclass(frozen=True)
class PodView:
    name: str
    container: str | None
    limit: int | None  # the container's memory limit, bytes
    working_set: Reading | None
    restart_count: int
    last_termination: str | None  # lastState.terminated.reason
    terminated_at: datetime.datetime | None
    running_since: datetime.datetime | None


def _quantity(value: Any) -> int | None:
    if value is None:
        return None
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(value))  # type: ignore[no-untyped-call]


def view_pod(pod: Any, container: str | None, readings: Readings) -> PodView | None:
    """The pod as the triggers see it; None unless it is Running and not being deleted."""
    if pod.status is None or pod.status.phase != "Running" or pod.metadata.deletion_timestamp is not None:
        return None
    names = [k.name for k in pod.spec.containers]
    name = container if container in names else (names[0] if len(names) == 1 else None)
    limit = None
    for spec in pod.spec.containers:
        if spec.name == name and spec.resources is not None and spec.resources.limits:
            limit = _quantity(spec.resources.limits.get("memory"))
    restarts, reason, finished, since = 0, None, None, None
    for status in pod.status.container_statuses or []:
        if status.name != name:
            continue
        restarts = int(status.restart_count or 0)
        terminated = status.last_state.terminated if status.last_state is not None else None
        if terminated is not None:
            reason, finished = terminated.reason, parse_time(terminated.finished_at)
        if status.state is not None and status.state.running is not None:
            since = parse_time(status.state.running.started_at)
    return PodView(
        name=pod.metadata.name,
        container=name,
        limit=limit,
        working_set=readings.get((pod.metadata.name, name)) if name else None,
        restart_count=restarts,
        last_termination=reason,
        terminated_at=finished,
        running_since=since,
    )


# -- the headroom rule ----------------------------------------------------------------


@dataclass(frozen=True)
class Headroom:
    fits: bool
    message: str


def headroom(trigger: Trigger, limit: int, container: str) -> Headroom:
    """Whether a capture at the trigger's threshold fits under the container's limit.

    A snapshot costs the target about BYTES_PER_NODE per heap object (the engine's
    preflight owns that figure), and a heap of small objects holds one per
    HEAP_BYTES_PER_NODE of its size, the preflight's upper bound when it only knows the
    memory in use. At the threshold the working set is ``threshold``; what is left under
    the limit must hold the snapshot of a heap that large, or the capture's preflight will
    refuse it (``InsufficientMemory``) rather than let the container be OOM-killed.
    """
    assert trigger.above is not None
    threshold = trigger.above.of(limit) or 0
    room = limit - threshold
    worst = threshold // HEAP_BYTES_PER_NODE * BYTES_PER_NODE
    fitting_objects = max(room, 0) // BYTES_PER_NODE
    # The highest threshold whose worst case still fits: t + t * 270 / 37 <= limit.
    safe = limit / (1 + BYTES_PER_NODE / HEAP_BYTES_PER_NODE)
    words = (
        f"{trigger.path}.above {trigger.above} of container {container}'s limit {mib(limit)} is "
        f"{mib(threshold)}, leaving {mib(room)}; a snapshot costs ~{BYTES_PER_NODE} B per heap object, "
        f"so that room holds the snapshot of a heap of {objects(fitting_objects)} objects "
        f"(~{mib(fitting_objects * HEAP_BYTES_PER_NODE)} of small objects)"
    )
    if room <= 0 or worst > room:
        return Headroom(
            False,
            f"{words}, while a heap filling {mib(threshold)} may hold "
            f"{objects(threshold // HEAP_BYTES_PER_NODE)} and need ~{mib(worst)}. Such captures are "
            "refused by their preflight (the container is not OOM-killed); a threshold at or below "
            f"{mib(safe)} ({100 * safe / limit:.0f}% of the limit) always fits, or raise the limit.",
        )
    return Headroom(True, f"{words}: enough for any heap at that threshold.")


# -- one round's decisions ------------------------------------------------------------


@dataclass
class Fired:
    pod: PodView
    trigger: Trigger
    reason: str


@dataclass
class Outcome:
    fired: Fired
    outcome: str  # Created, Cooldown, MaxConcurrent, Failed
    snapshot: str | None = None
    message: str = ""


@dataclass
class GrowthWindow:
    """Working-set readings of one pod within a growth trigger's window (memory only)."""

    samples: deque[tuple[datetime.datetime, int]] = field(default_factory=deque)

    def add(self, when: datetime.datetime, value: int, within: float) -> tuple[datetime.datetime, int]:
        if not self.samples or self.samples[-1][0] < when:
            self.samples.append((when, value))
        while self.samples and (when - self.samples[0][0]).total_seconds() > within:
            self.samples.popleft()
        return min(self.samples, key=lambda s: s[1])


def _finished(obj: Mapping[str, Any]) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def _created(obj: Mapping[str, Any]) -> datetime.datetime:
    when = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return when or datetime.datetime.min.replace(tzinfo=datetime.UTC)


class PolicyRound:
    """Reconciles one policy once: decide, act, record."""

    def __init__(
        self,
        obj: Mapping[str, Any],
        *,
        controller: PolicyController,
        now: datetime.datetime,
    ) -> None:
        self.obj = obj
        meta = obj["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation = int(meta.get("generation") or 1)
        self.created = parse_time(meta.get("creationTimestamp")) or now
        self.controller = controller
        self.cluster = controller.cluster
        self.now = now
        self.status: dict[str, Any] = dict(obj.get("status") or {})
        self.original = json.dumps(self.status, sort_keys=True)
        self.events: list[tuple[str, str, str]] = []

    # -- status helpers ------------------------------------------------------------

    def condition(self, type_: str, status: c.ConditionStatus, reason: str, message: str) -> None:
        self.status["conditions"] = c.set_condition(
            self.status.get("conditions") or [],
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
            now=rfc3339(self.now),
        )

    def drop_condition(self, type_: str) -> None:
        self.status["conditions"] = [x for x in self.status.get("conditions") or [] if x.get("type") != type_]

    def count(self, key: str, n: int = 1) -> None:
        counts = dict(self.status.get("counts") or {})
        counts[key] = int(counts.get(key) or 0) + n
        self.status["counts"] = counts

    def pod_states(self) -> dict[str, dict[str, Any]]:
        return {p["pod"]: dict(p) for p in self.status.get("pods") or [] if p.get("pod")}

    # -- the round -----------------------------------------------------------------

    async def run(self) -> None:
        spec_changed = self.status.get("observedGeneration") != self.generation
        try:
            policy = parse_policy(self.obj.get("spec") or {})
        except HeapsnapError as error:
            self.condition(c.READY, "False", "InvalidSpec", error.message)
            self.status["observedGeneration"] = self.generation
            if spec_changed:
                self.events.append(("Warning", "InvalidSpec", error.message))
            await self.save()
            return
        owned = await self.cluster.list_owned(self.namespace, self.name, self.uid)
        await self.history(policy, owned)
        pods = await self.cluster.list_pods(self.namespace, policy.selector)
        readings: Readings = {}
        if policy.memory_triggers and not policy.suspend:
            readings = await self.controller.read_memory(self.namespace, pods)
        views = [v for v in (view_pod(p, policy.container, readings) for p in pods) if v is not None]
        self.status["matchedPods"] = len(views)
        self.headroom(policy, views)
        self.readings_condition(policy, views)
        if policy.suspend:
            self.status.pop("nextScheduleTime", None)
            self.condition(c.READY, "False", "Suspended", "spec.suspend is true: no trigger fires.")
            self.status["observedGeneration"] = self.generation
            await self.save()
            return
        due = self.schedule(policy, spec_changed)
        fired = self.fire(policy, views, due)
        active = [o for o in owned if _finished(o) is None]
        outcomes = await self.act(policy, fired, owned, len(active))
        self.record(outcomes, {v.name for v in views}, policy.cooldown)
        self.status["active"] = len(active) + sum(1 for o in outcomes if o.outcome == "Created")
        self.condition(c.READY, "True", "Active", self.describe(policy, len(views)))
        self.status["observedGeneration"] = self.generation
        await self.save()

    async def save(self) -> None:
        """Write the status if this round changed it (a quiet policy costs no writes), then
        post the round's Events."""
        if json.dumps(self.status, sort_keys=True) != self.original and not await self.cluster.patch_status(
            self.namespace, self.name, self.status
        ):
            return  # the policy was deleted meanwhile
        for type_, reason, message in self.events:
            try:
                await self.cluster.event(self.obj, type_, reason, message)
            except (ApiException, OSError) as error:
                logger.warning("event on policy %s/%s failed: %s", self.namespace, self.name, error)

    @staticmethod
    def describe(policy: PolicySpec, pods: int) -> str:
        kinds = ", ".join(sorted({t.kind for t in policy.triggers}))
        return f"Watching {pods} running pod(s) for {kinds}."

    # -- conditions at creation (and whenever the pods change) ---------------------

    def headroom(self, policy: PolicySpec, views: Sequence[PodView]) -> None:
        thresholds = [t for t in policy.triggers if t.kind == "memory"]
        if not thresholds:
            self.drop_condition(HEADROOM)
            return
        if not views:
            self.condition(HEADROOM, "Unknown", "NoPods", "No running pod matches spec.selector yet.")
            return
        # One verdict per distinct (container, limit): pods of one Deployment share it.
        verdicts: list[Headroom] = []
        seen: set[tuple[str | None, int | None]] = set()
        for view in views:
            if (view.container, view.limit) in seen:
                continue
            seen.add((view.container, view.limit))
            for trigger in thresholds:
                if view.limit is None:
                    assert trigger.above is not None
                    if trigger.above.percent is not None:
                        verdicts.append(
                            Headroom(
                                False,
                                f"{trigger.path}.above is {trigger.above} of the container's memory limit, "
                                f"but container {view.container} of pod {view.name} has none: set "
                                "resources.limits.memory, or give an absolute quantity.",
                            )
                        )
                    continue
                verdicts.append(headroom(trigger, view.limit, view.container or "?"))
        bad = [v for v in verdicts if not v.fits]
        if bad:
            reason = "NoRoomForCapture"
            before = c.get_condition(self.status.get("conditions") or [], HEADROOM)
            if before is None or before.get("status") != "False" or before.get("message") != bad[0].message:
                self.events.append(("Warning", reason, bad[0].message))
            self.condition(HEADROOM, "False", reason, " ".join(v.message for v in bad)[:2000])
        elif verdicts:
            self.condition(HEADROOM, "True", "RoomForCapture", verdicts[0].message)
        else:
            self.drop_condition(HEADROOM)

    def readings_condition(self, policy: PolicySpec, views: Sequence[PodView]) -> None:
        if not policy.memory_triggers or policy.suspend:
            self.drop_condition(MEMORY_READINGS)
            return
        missing = [v.name for v in views if v.working_set is None]
        source = self.controller.memory.name
        if missing:
            self.condition(
                MEMORY_READINGS,
                "False",
                "NoReadings",
                f"No working set for pod(s) {', '.join(missing[:10])} from {source}; memory and growth "
                "triggers cannot fire for them (is metrics-server installed, or may the operator get "
                "nodes/proxy?).",
            )
        elif views:
            self.condition(MEMORY_READINGS, "True", "Reading", f"Working sets come from {source}.")

    # -- schedule ------------------------------------------------------------------

    def schedule(self, policy: PolicySpec, spec_changed: bool) -> Trigger | None:
        """The schedule trigger that is due now (at most one per round), and the next time."""
        schedules = policy.schedules
        if not schedules:
            self.status.pop("nextScheduleTime", None)
            return None
        following = parse_time(self.status.get("nextScheduleTime"))
        due: Trigger | None = None
        if following is not None and not spec_changed and following <= self.now:
            # Which schedule produced that time: the first whose next time after just before it is it.
            before = following - datetime.timedelta(seconds=1)
            for trigger in schedules:
                assert trigger.schedule is not None
                if trigger.schedule.next_after(before) == following:
                    due = trigger
                    break
            due = due or schedules[0]
            self.status["lastScheduleTime"] = rfc3339(following)
        nexts = []
        for trigger in schedules:
            assert trigger.schedule is not None
            nexts.append(trigger.schedule.next_after(self.now))
        self.status["nextScheduleTime"] = rfc3339(min(nexts))
        return due

    # -- which pods fire -----------------------------------------------------------

    def fire(self, policy: PolicySpec, views: Sequence[PodView], due: Trigger | None) -> list[Fired]:
        fired: list[Fired] = []
        windows = self.controller.windows
        states = self.pod_states()
        for view in views:
            # Every trigger is checked (a growth window takes each reading); the first hit counts.
            hits = [self.check(t, view, due, states.get(view.name) or {}, windows) for t in policy.triggers]
            hit = next((h for h in hits if h is not None), None)
            if hit is not None:
                fired.append(hit)
        return fired

    def check(
        self,
        trigger: Trigger,
        view: PodView,
        due: Trigger | None,
        state: Mapping[str, Any],
        windows: dict[tuple[str, str, int], GrowthWindow],
    ) -> Fired | None:
        reading = view.working_set
        if trigger.kind == "schedule":
            if trigger is due and trigger.schedule is not None:
                when = self.status.get("lastScheduleTime")
                zone = trigger.schedule.time_zone
                return Fired(view, trigger, f"schedule '{trigger.schedule.cron}' ({zone}) at {when}")
            return None
        if trigger.kind == "memory":
            assert trigger.above is not None
            threshold = trigger.above.of(view.limit)
            if reading is None or threshold is None or reading.working_set <= threshold:
                return None
            of_limit = f" of the {mib(view.limit)} limit" if view.limit else ""
            percent = f" ({mib(threshold)})" if trigger.above.percent is not None else ""
            return Fired(
                view,
                trigger,
                f"memory: container {view.container} at {mib(reading.working_set)}{of_limit}, above "
                f"{trigger.above}{percent}, per {reading.source}",
            )
        if trigger.kind == "growth":
            assert trigger.by is not None
            if reading is None:
                return None
            key = (self.uid, view.name, trigger.index)
            window = windows.setdefault(key, GrowthWindow())
            low_time, low = window.add(reading.time, reading.working_set, trigger.within)
            grew = reading.working_set - low
            needed = trigger.by.of(low)
            if needed is None or grew < needed or grew <= 0:
                return None
            seconds = (reading.time - low_time).total_seconds()
            return Fired(
                view,
                trigger,
                f"growth: container {view.container} grew from {mib(low)} to {mib(reading.working_set)} "
                f"in {seconds:.0f} s (by {trigger.by}, within {trigger.within:.0f} s), per {reading.source}",
            )
        # restart
        if view.restart_count <= int(state.get("restartCount") or 0) or view.terminated_at is None:
            return None
        if trigger.reason != "Any" and view.last_termination != trigger.reason:
            return None
        if view.terminated_at < self.created or view.running_since is None:
            return None
        ran = (self.now - view.running_since).total_seconds()
        if ran < trigger.after:
            return None
        return Fired(
            view,
            trigger,
            f"restart: container {view.container} restarted ({view.last_termination}, restart "
            f"{view.restart_count}) and its replacement has run {ran:.0f} s",
        )

    # -- acting on it ----------------------------------------------------------------

    def last_trigger(
        self, pod: str, states: Mapping[str, Mapping[str, Any]], owned: Iterable[Mapping[str, Any]]
    ) -> datetime.datetime | None:
        """The pod's last capture: in the status, or (if the operator stopped between creating
        a HeapSnapshot and writing the status) the newest HeapSnapshot of it."""
        times = [parse_time((states.get(pod) or {}).get("lastTriggerTime"))]
        times += [
            _created(o)
            for o in owned
            if ((o.get("metadata") or {}).get("annotations") or {}).get(POD_ANNOTATION) == pod
        ]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    async def act(
        self, policy: PolicySpec, fired: list[Fired], owned: list[dict[str, Any]], active: int
    ) -> list[Outcome]:
        states = self.pod_states()
        limit = min(policy.max_concurrent, self.controller.global_limit)
        # Pods captured longest ago (or never) first.
        never = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        fired.sort(key=lambda f: (self.last_trigger(f.pod.name, states, owned) or never, f.pod.name))
        outcomes = []
        for hit in fired:
            last = self.last_trigger(hit.pod.name, states, owned)
            if last is not None and (self.now - last).total_seconds() < policy.cooldown:
                left = policy.cooldown - (self.now - last).total_seconds()
                outcomes.append(Outcome(hit, "Cooldown", message=f"in cooldown for {left:.0f} s more"))
                continue
            if active >= limit:
                outcomes.append(
                    Outcome(
                        hit,
                        "MaxConcurrent",
                        message=f"{active} capture(s) of this policy unfinished (limit {limit})",
                    )
                )
                continue
            name = snapshot_name(self.name, hit.pod.name, self.now)
            try:
                await self.cluster.create_snapshot(
                    self.obj,
                    name,
                    hit.pod.name,
                    hit.trigger.kind,
                    hit.reason,
                    policy.snapshot_spec(hit.pod.name),
                )
            except ApiException as error:
                message = (
                    f"could not create HeapSnapshot {name}: {error.reason} {str(error.body or '')[:300]}"
                )
                outcomes.append(Outcome(hit, "Failed", message=message))
                continue
            active += 1
            outcomes.append(Outcome(hit, "Created", snapshot=name))
        return outcomes

    def record(self, outcomes: list[Outcome], matched: set[str], cooldown: float) -> None:
        states = self.pod_states()
        recent = list(self.status.get("recent") or [])
        metrics = self.controller.metrics
        skipped: dict[str, list[Outcome]] = {}
        for o in outcomes:
            hit = o.fired
            kind = hit.trigger.kind
            # A memory or growth trigger stays true poll after poll: only a capture, or a
            # schedule or restart that passed without one, is worth a record and an Event.
            level = kind in ("memory", "growth")
            if o.outcome != "Created" and level:
                continue
            if metrics is not None:
                metrics.policy_triggers.labels(self.namespace, kind, o.outcome).inc()
            state = states.setdefault(hit.pod.name, {"pod": hit.pod.name})
            state.update({"trigger": kind, "reason": hit.reason[:512], "outcome": o.outcome})
            if kind == "restart" and o.outcome in ("Created", "Cooldown"):
                state["restartCount"] = hit.pod.restart_count  # this restart is handled
            self.count("triggered")
            if o.outcome == "Created":
                assert o.snapshot is not None
                state.update({"lastTriggerTime": rfc3339(self.now), "snapshot": o.snapshot})
                self.status["lastTriggerTime"] = rfc3339(self.now)
                self.count("created")
                recent.insert(
                    0,
                    {
                        "name": o.snapshot,
                        "pod": hit.pod.name,
                        "trigger": kind,
                        "reason": hit.reason[:512],
                        "time": rfc3339(self.now),
                        "phase": "Pending",
                    },
                )
                self.events.append(
                    ("Normal", "Triggered", f"{hit.reason}: created HeapSnapshot {o.snapshot}.")
                )
            else:
                self.count("skipped")
                skipped.setdefault(o.outcome, []).append(o)
        # One Event per kind of skip and round, however many pods a schedule matched.
        for outcome, group in skipped.items():
            first = group[0]
            pods = ", ".join(o.fired.pod.name for o in group[:5])
            more = f" and {len(group) - 5} more" if len(group) > 5 else ""
            self.events.append(
                (
                    "Warning" if outcome == "Failed" else "Normal",
                    f"Skipped{outcome}",
                    f"{first.fired.reason}: {len(group)} pod(s) not captured ({pods}{more}): "
                    f"{first.message}.",
                )
            )
        self.status["recent"] = recent[:RECENT]

        # A pod that is gone drops out once its cooldown is over (its name may come back, as a
        # StatefulSet's do, and must still wait until then).
        def keep(state: Mapping[str, Any]) -> bool:
            last = parse_time(state.get("lastTriggerTime"))
            recent_enough = last is not None and (self.now - last).total_seconds() < cooldown
            return state["pod"] in matched or recent_enough

        ordered = sorted(
            (s for s in states.values() if keep(s)),
            key=lambda s: s.get("lastTriggerTime") or "",
            reverse=True,
        )
        self.status["pods"] = ordered[:MAX_PODS]

    # -- finished captures: what did not fit, and the history limit ---------------------

    async def history(self, policy: PolicySpec, owned: list[dict[str, Any]]) -> None:
        """Count the recent captures that finished, report those that did not fit, and
        delete finished HeapSnapshots beyond spec.historyLimit."""
        by_name = {o["metadata"]["name"]: o for o in owned}
        recent = [dict(r) for r in self.status.get("recent") or []]
        for entry in recent:
            obj = by_name.get(str(entry.get("name")))
            phase = _finished(obj) if obj is not None else None
            if phase is None or entry.get("phase") == phase:
                continue
            entry["phase"] = phase
            self.count(phase.lower())
            failure = ((obj or {}).get("status") or {}).get("failure") or {}
            if failure.get("reason") == "InsufficientMemory":
                self.did_not_fit(str(entry["name"]), str(entry.get("pod")), failure)
        self.status["recent"] = recent
        finished: dict[str, list[dict[str, Any]]] = {"Succeeded": [], "Failed": []}
        for obj in owned:
            phase = _finished(obj)
            if phase is not None:
                finished[phase].append(obj)
        keep = {"Succeeded": policy.keep_succeeded, "Failed": policy.keep_failed}
        for phase, objs in finished.items():
            # Names end in the trigger's time: they order captures created within one second.
            objs.sort(key=lambda o: (_created(o), o["metadata"]["name"]), reverse=True)
            for obj in objs[keep[phase] :]:
                await self.cluster.delete_snapshot(self.namespace, obj["metadata"]["name"])

    def did_not_fit(self, name: str, pod: str, failure: Mapping[str, Any]) -> None:
        """The capture's preflight refused: the policy says so instead of the pod dying."""
        message = (
            f"HeapSnapshot {name} of pod {pod} would not fit in the container's memory, so it was not "
            f"taken and the pod was left alone: {failure.get('message', '')}"
        )
        self.status["lastNotFitting"] = {"pod": pod, "time": rfc3339(self.now), "message": message[:1024]}
        self.count("didNotFit")
        self.events.append(("Warning", "CaptureDidNotFit", message))
        if self.controller.metrics is not None:
            self.controller.metrics.policy_triggers.labels(self.namespace, "any", "DidNotFit").inc()


class PolicyController:
    """Every policy in the watched namespaces, every ``interval`` seconds."""

    def __init__(
        self,
        cluster: PolicyCluster,
        memory: MemorySource,
        *,
        namespaces: Sequence[str] = (),
        global_limit: int = 4,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cluster = cluster
        self.memory = memory
        self.namespaces = list(namespaces)
        self.global_limit = global_limit
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self.windows: dict[tuple[str, str, int], GrowthWindow] = {}

    async def read_memory(self, namespace: str, pods: Sequence[Any]) -> Readings:
        try:
            return await self.memory.read(namespace, pods)
        except (ApiException, OSError, ValueError) as error:
            logger.warning("reading memory in %s failed: %s", namespace, error)
            return {}

    async def reconcile(self, obj: Mapping[str, Any]) -> None:
        await PolicyRound(obj, controller=self, now=self.clock.now()).run()

    async def reconcile_all(self) -> int:
        """One round over every policy; returns how many were reconciled."""
        policies = await self.cluster.list_policies(self.namespaces)
        live = {p["metadata"]["uid"] for p in policies}
        self.windows = {k: v for k, v in self.windows.items() if k[0] in live}
        done = 0
        for obj in policies:
            try:
                await self.reconcile(obj)
                done += 1
            except (ApiException, OSError, HeapsnapError) as error:
                meta = obj["metadata"]
                logger.warning("policy %s/%s: %s", meta["namespace"], meta["name"], error)
        return done

    async def run(self, interval: float, on_round: Callable[[], None] | None = None) -> None:
        missing = False
        while True:
            try:
                await self.reconcile_all()
                missing = False
            except ApiException as error:
                if error.status != 404:
                    logger.warning("listing HeapSnapshotPolicies failed: %s %s", error.status, error.reason)
                elif not missing:  # the CRD is not installed (yet): say so once
                    logger.info(
                        "no HeapSnapshotPolicy CRD: apply crds/heapsnap.dev_heapsnapshotpolicies.yaml"
                    )
                missing = error.status == 404
            except OSError as error:
                logger.warning("listing HeapSnapshotPolicies failed: %s", error)
            if on_round is not None:
                on_round()
            await asyncio.sleep(interval)
