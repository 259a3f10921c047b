"""HeapSnapshotPolicy spec, parsed from the custom resource into typed values.

The API server validates the spec first (crds/heapsnap.dev_heapsnapshotpolicies.yaml);
parsing here checks again, naming the field, so a policy created before a schema change
is reported on its status rather than crashing the loop. The template is checked by
parsing it as the HeapSnapshot spec it becomes (``types.parse_spec``).
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from heapsnap.errors import InvalidInput
from heapsnap.k8s.types import GROUP, LabelSelector, parse_spec

POLICY_PLURAL = "heapsnapshotpolicies"
POLICY_KIND = "HeapSnapshotPolicy"
#: On every HeapSnapshot a policy creates: the policy's name (shortened to a label value)
#: and the pod it targets; the full names are in the annotations.
POLICY_LABEL = f"{GROUP}/policy"
POD_ANNOTATION = f"{GROUP}/pod"
POLICY_ANNOTATION = f"{GROUP}/policy"
TRIGGER_ANNOTATION = f"{GROUP}/trigger"

TriggerKind = Literal["schedule", "memory", "growth", "restart"]

_DURATION = re.compile(r"^(?:[0-9]+[hms])+$")
_DURATION_PART = re.compile(r"([0-9]+)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_QUANTITY_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(|k|M|G|T|Ki|Mi|Gi|Ti)$")


def parse_duration(value: Any, path: str) -> float:
    """``90s``, ``10m``, ``6h``, ``1h30m`` as seconds."""
    if not isinstance(value, str) or not _DURATION.match(value):
        raise InvalidInput(f"{path} is {value!r}; give a duration such as 90s, 10m, 6h or 1h30m.")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    if seconds <= 0:
        raise InvalidInput(f"{path} is {value!r}; give a duration above zero.")
    return float(seconds)


def parse_quantity(value: Any, path: str) -> int:
    """A memory quantity (``512Mi``, ``2G``, ``1073741824``) as bytes."""
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if match is None:
        raise InvalidInput(f"{path} is {value!r}; give a memory quantity such as 1536Mi or 2Gi.")
    try:
        return int(Decimal(match[1]) * _QUANTITY_SUFFIX[match[2]])
    except InvalidOperation:
        raise InvalidInput(f"{path} is {value!r}; give a memory quantity such as 1536Mi.") from None


@dataclass(frozen=True)
class Amount:
    """A percent (of the limit, or of the lowest reading) or an absolute number of bytes."""

    percent: float | None = None
    bytes: int | None = None

    def of(self, base: int | None) -> int | None:
        """The amount in bytes against ``base``; None when a percent has no base."""
        if self.bytes is not None:
            return self.bytes
        assert self.percent is not None
        return None if base is None else int(base * self.percent / 100)

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        assert self.bytes is not None
        return f"{self.bytes / (1 << 20):,.0f} MiB"


def parse_amount(value: Any, path: str) -> Amount:
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = -1.0
        if not 0 < percent <= 100:
            raise InvalidInput(f"{path} is {value!r}; give a percent from 1% to 100%, or a quantity.")
        return Amount(percent=percent)
    amount = parse_quantity(value, path)
    if amount <= 0:
        raise InvalidInput(f"{path} is {value!r}; give an amount above zero.")
    return Amount(bytes=amount)


@dataclass(frozen=True)
class Schedule:
    cron: str
    time_zone: str = "UTC"

    def next_after(self, when: datetime.datetime) -> datetime.datetime:
        """The first scheduled time strictly after ``when`` (in UTC)."""
        from croniter import croniter

        local = when.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        seconds = len(self.cron.split()) == 6
        following: datetime.datetime = croniter(self.cron, local, second_at_beginning=seconds).get_next(
            datetime.datetime
        )
        return following.astimezone(datetime.UTC)


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    index: int
    schedule: Schedule | None = None
    above: Amount | None = None  # memory
    by: Amount | None = None  # growth
    within: float = 0.0  # growth, seconds
    reason: str = "OOMKilled"  # restart
    after: float = 600.0  # restart, seconds

    @property
    def path(self) -> str:
        return f"spec.triggers[{self.index}].{self.kind}"


@dataclass(frozen=True)
class PolicySpec:
    selector: LabelSelector
    container: str | None
    process: Mapping[str, Any]
    triggers: tuple[Trigger, ...]
    template: Mapping[str, Any]
    cooldown: float = 3600.0
    max_concurrent: int = 1
    keep_succeeded: int = 10
    keep_failed: int = 3
    suspend: bool = False

    @property
    def schedules(self) -> list[Trigger]:
        return [t for t in self.triggers if t.schedule is not None]

    @property
    def memory_triggers(self) -> list[Trigger]:
        return [t for t in self.triggers if t.kind in ("memory", "growth")]

    def snapshot_spec(self, pod: str) -> dict[str, Any]:
        """The spec of a HeapSnapshot of ``pod``: the template with its target."""
        target: dict[str, Any] = {"podName": pod}
        if self.container:
            target["container"] = self.container
        if self.process:
            target["process"] = dict(self.process)
        return {**dict(self.template), "target": target}


def _parse_trigger(raw: Any, index: int) -> Trigger:
    path = f"spec.triggers[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{path} must be an object with one of schedule, memory, growth or restart.")
    kinds = [k for k in ("schedule", "memory", "growth", "restart") if k in raw]
    if len(kinds) != 1:
        raise InvalidInput(
            f"{path} sets {kinds or 'nothing'}; set exactly one of schedule, memory, growth, restart."
        )
    kind: TriggerKind = kinds[0]  # type: ignore[assignment]
    body = raw[kind] or {}
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{path}.{kind} must be an object.")
    if kind == "schedule":
        cron = body.get("cron")
        zone = body.get("timeZone") or "UTC"
        from croniter import croniter

        fields = len(cron.split()) if isinstance(cron, str) else 0
        if not isinstance(cron, str) or not croniter.is_valid(cron, second_at_beginning=fields == 6):
            raise InvalidInput(
                f"{path}.schedule.cron is {cron!r}; give five cron fields such as '0 3 * * *'."
            )
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"{path}.schedule.timeZone is {zone!r}, not a known time zone; give an IANA name such as "
                "Europe/Berlin, or leave it out for UTC."
            ) from None
        return Trigger(kind, index, schedule=Schedule(cron, zone))
    if kind == "memory":
        return Trigger(kind, index, above=parse_amount(body.get("above"), f"{path}.memory.above"))
    if kind == "growth":
        return Trigger(
            kind,
            index,
            by=parse_amount(body.get("by"), f"{path}.growth.by"),
            within=parse_duration(body.get("within"), f"{path}.growth.within"),
        )
    reason = body.get("reason") or "OOMKilled"
    if reason not in ("OOMKilled", "Any"):
        raise InvalidInput(f"{path}.restart.reason is {reason!r}; use OOMKilled or Any.")
    return Trigger(
        kind, index, reason=reason, after=parse_duration(body.get("after", "10m"), f"{path}.restart.after")
    )


def parse_policy(spec: Mapping[str, Any]) -> PolicySpec:
    """Parse a HeapSnapshotPolicy's spec; raise ``InvalidInput`` naming the bad field."""
    raw_selector = spec.get("selector")
    if not isinstance(raw_selector, Mapping):
        raise InvalidInput("spec.selector is required: the labels of the pods to watch.")
    labels = raw_selector.get("matchLabels") or {}
    exprs = raw_selector.get("matchExpressions") or []
    if not labels and not exprs:
        raise InvalidInput(
            "spec.selector needs matchLabels or matchExpressions; an empty selector would match every pod."
        )
    raw_triggers = spec.get("triggers")
    if not isinstance(raw_triggers, list) or not raw_triggers:
        raise InvalidInput("spec.triggers needs at least one trigger: schedule, memory, growth or restart.")
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise InvalidInput("spec.template is required: the HeapSnapshot spec (storage, ...) of each capture.")
    if "target" in template:
        raise InvalidInput(
            "spec.template.target is set by the policy; use spec.selector, spec.container and spec.process."
        )
    container = spec.get("container")
    process = spec.get("process") or {}
    policy = PolicySpec(
        selector=LabelSelector(dict(labels), tuple(exprs)),
        container=container if isinstance(container, str) else None,
        process=dict(process) if isinstance(process, Mapping) else {},
        triggers=tuple(_parse_trigger(t, i) for i, t in enumerate(raw_triggers)),
        template=dict(template),
        cooldown=parse_duration(spec.get("cooldown", "1h"), "spec.cooldown"),
        max_concurrent=int(spec.get("maxConcurrent") or 1),
        keep_succeeded=int((spec.get("historyLimit") or {}).get("succeeded", 10)),
        keep_failed=int((spec.get("historyLimit") or {}).get("failed", 3)),
        suspend=bool(spec.get("suspend", False)),
    )
    try:  # the template must be a HeapSnapshot spec once the target is in
        parse_spec(policy.snapshot_spec("pod"))
    except InvalidInput as error:
        raise InvalidInput(
            error.message.replace("spec.", "spec.template.").replace("spec.template.target.", "spec."),
            reason=error.reason,
        ) from None
    return policy
