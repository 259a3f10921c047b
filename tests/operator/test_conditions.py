from __future__ import annotations

from typing import Any

import pytest

from heapsnap.k8s.conditions import derive_phase, set_condition


def test_set_condition_keeps_transition_time_unless_status_flips() -> None:
    conds = set_condition([], "Ready", "Unknown", "Capturing", "m1", observed_generation=1, now="t1")
    conds = set_condition(conds, "Ready", "Unknown", "Waiting", "m2", observed_generation=2, now="t2")
    assert conds == [
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "Waiting",
            "message": "m2",
            "lastTransitionTime": "t1",
            "observedGeneration": 2,
        }
    ]
    conds = set_condition(conds, "Ready", "True", "Succeeded", "m3", observed_generation=2, now="t3")
    assert conds[0]["lastTransitionTime"] == "t3"


def test_set_condition_replaces_by_type_and_does_not_mutate() -> None:
    original = set_condition([], "Captured", "True", "Generated", "", observed_generation=1, now="t")
    updated = set_condition(original, "Uploaded", "True", "Uploaded", "", observed_generation=1, now="t")
    assert [c["type"] for c in updated] == ["Captured", "Uploaded"]
    assert len(original) == 1


def cond(type_: str, status: str) -> dict[str, Any]:
    return {"type": type_, "status": status}


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        ([], "Pending"),
        ([cond("Ready", "Unknown")], "Pending"),
        ([cond("TargetResolved", "True"), cond("Ready", "Unknown")], "Capturing"),
        ([cond("TargetResolved", "True"), cond("Captured", "True")], "Uploading"),
        ([cond("Captured", "True"), cond("Ready", "True")], "Succeeded"),
        ([cond("TargetResolved", "False"), cond("Ready", "False")], "Failed"),
    ],
)
def test_phase_is_derived_from_conditions(conditions: list[dict[str, Any]], phase: str) -> None:
    assert derive_phase(conditions) == phase
