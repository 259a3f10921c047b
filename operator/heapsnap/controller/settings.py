"""Operator settings from the environment (see the operator/chart contract)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from heapsnap.errors import InvalidInput


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    max_concurrent_captures: int = 4
    health_port: int = 8080
    leader_election: bool = True
    lease_name: str = "heapsnap-operator"
    lease_namespace: str = "default"
    identity: str = "heapsnap-operator"
    log_level: str = "INFO"
    # HeapSnapshotPolicies: how often each is reconciled, and where memory readings come from.
    policy_interval: int = 15
    memory_source: str = "auto"

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number; set a whole number from {lo} to {hi}.") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name}={value} is out of range; set a whole number from {lo} to {hi}.")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name}={raw!r} is not a boolean; set true or false.")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    namespaces = tuple(n.strip() for n in env.get("HEAPSNAP_WATCH_NAMESPACES", "").split(",") if n.strip())
    level = env.get("HEAPSNAP_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise InvalidInput(f"HEAPSNAP_LOG_LEVEL={level!r}; use DEBUG, INFO, WARNING or ERROR.")
    source = env.get("HEAPSNAP_MEMORY_SOURCE", "auto").strip().lower() or "auto"
    if source not in ("auto", "kubelet", "metrics"):
        raise InvalidInput(f"HEAPSNAP_MEMORY_SOURCE={source!r}; use auto, kubelet or metrics.")
    return Settings(
        namespaces=namespaces,
        max_concurrent_captures=_int(env, "HEAPSNAP_MAX_CONCURRENT_CAPTURES", 4, 1, 1000),
        health_port=_int(env, "HEAPSNAP_HEALTH_PORT", 8080, 0, 65535),
        leader_election=_bool(env, "HEAPSNAP_LEADER_ELECTION", True),
        lease_name=env.get("HEAPSNAP_LEASE_NAME", "").strip() or "heapsnap-operator",
        lease_namespace=(
            env.get("HEAPSNAP_LEASE_NAMESPACE", "").strip()
            or env.get("POD_NAMESPACE", "").strip()
            or "default"
        ),
        identity=env.get("POD_NAME", "").strip() or socket.gethostname(),
        log_level=level,
        policy_interval=_int(env, "HEAPSNAP_POLICY_INTERVAL_SECONDS", 15, 1, 600),
        memory_source=source,
    )
