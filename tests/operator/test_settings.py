from __future__ import annotations

import pytest

from heapsnap._malloc import tune_malloc
from heapsnap.controller.settings import from_env
from heapsnap.errors import InvalidInput


def test_defaults_follow_the_contract() -> None:
    s = from_env({})
    assert s.clusterwide and s.max_concurrent_captures == 4 and s.health_port == 8080
    assert s.leader_election and s.lease_name == "heapsnap-operator" and s.lease_namespace == "default"


def test_values_from_env() -> None:
    s = from_env(
        {
            "HEAPSNAP_WATCH_NAMESPACES": "a, b,,",
            "HEAPSNAP_MAX_CONCURRENT_CAPTURES": "2",
            "HEAPSNAP_LEADER_ELECTION": "false",
            "POD_NAMESPACE": "ops",
            "POD_NAME": "op-1",
        }
    )
    assert s.namespaces == ("a", "b") and not s.clusterwide
    assert s.max_concurrent_captures == 2 and not s.leader_election
    assert s.lease_namespace == "ops" and s.identity == "op-1"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HEAPSNAP_MAX_CONCURRENT_CAPTURES": "four"}, "HEAPSNAP_MAX_CONCURRENT_CAPTURES"),
        ({"HEAPSNAP_MAX_CONCURRENT_CAPTURES": "0"}, "HEAPSNAP_MAX_CONCURRENT_CAPTURES"),
        ({"HEAPSNAP_LEADER_ELECTION": "maybe"}, "HEAPSNAP_LEADER_ELECTION"),
        ({"HEAPSNAP_LOG_LEVEL": "LOUD"}, "HEAPSNAP_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(InvalidInput, match=name):
        from_env(env)


def test_malloc_is_tuned_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    # This machine runs glibc, as the image does.
    assert tune_malloc() == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert tune_malloc() == ["MALLOC_MMAP_THRESHOLD_"]
