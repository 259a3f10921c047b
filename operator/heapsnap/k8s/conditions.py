"""Status conditions of a HeapSnapshot, kept like cert-manager's ``SetCondition``.

A condition is replaced by type; ``lastTransitionTime`` only moves when the status
flips; ``observedGeneration`` is always set. ``phase`` is derived from the conditions
so the two can never disagree.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

READY = "Ready"
TARGET_RESOLVED = "TargetResolved"
CAPTURED = "Captured"
UPLOADED = "Uploaded"
ANALYZED = "Analyzed"

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int,
    now: str | None = None,
) -> list[Condition]:
    """Return ``conditions`` with the one of ``type_`` replaced (or added)."""
    result = [dict(c) for c in conditions]
    new: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now or now_rfc3339(),
        "observedGeneration": observed_generation,
    }
    for i, existing in enumerate(result):
        if existing.get("type") == type_:
            if existing.get("status") == status and existing.get("lastTransitionTime"):
                new["lastTransitionTime"] = existing["lastTransitionTime"]
            result[i] = new
            return result
    result.append(new)
    return result


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def derive_phase(conditions: Sequence[Mapping[str, Any]]) -> str:
    """Pending, Capturing, Uploading, Succeeded or Failed, from the conditions alone."""
    ready = get_condition(conditions, READY)
    if ready is not None and ready.get("status") == "True":
        return "Succeeded"
    if ready is not None and ready.get("status") == "False":
        return "Failed"
    captured = get_condition(conditions, CAPTURED)
    if captured is not None and captured.get("status") == "True":
        return "Uploading"
    resolved = get_condition(conditions, TARGET_RESOLVED)
    if resolved is not None and resolved.get("status") == "True":
        return "Capturing"
    return "Pending"


def is_finished(status: Mapping[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")
