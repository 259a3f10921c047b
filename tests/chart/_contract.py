"""What the operator may do, from the operator contract (notes/operator-contract.md), as
(apiGroup, resource, verb) grants; a verb limited to one object name is spelled verb@name."""

from __future__ import annotations

from tests.chart._helm import Grant

# Per namespace the operator watches. pods/exec and pods/portforward need `get` beside the
# contract's `create`: the operator's websocket upgrade is an HTTP GET, which API servers
# up to 1.34 authorize as `get` only, and 1.35 and later as `get` and `create`.
WATCH_GRANTS: frozenset[Grant] = frozenset(
    [("heapsnap.dev", "heapsnapshots", v) for v in ("get", "list", "watch", "patch", "update")]
    + [("heapsnap.dev", "heapsnapshots/status", v) for v in ("get", "patch", "update")]
    + [("heapsnap.dev", "heapsnapshots/finalizers", "update")]
    + [("", "pods", v) for v in ("get", "list", "watch")]
    + [("", sub, v) for sub in ("pods/exec", "pods/portforward") for v in ("get", "create")]
    + [("", "events", v) for v in ("create", "patch")]
    # HeapSnapshotPolicies: read them, write their status, create and prune their captures,
    # and read pods' memory from metrics-server.
    + [("heapsnap.dev", "heapsnapshotpolicies", v) for v in ("get", "list", "watch")]
    + [("heapsnap.dev", "heapsnapshotpolicies/status", v) for v in ("get", "patch", "update")]
    + [("heapsnap.dev", "heapsnapshots", v) for v in ("create", "delete")]
    + [("metrics.k8s.io", "pods", v) for v in ("get", "list")]
)
# Cluster-wide in either mode (nodes are not namespaced): the kubelets' stats summaries.
NODE_STATS_GRANTS: frozenset[Grant] = frozenset([("", "nodes/proxy", "get")])
SECRET_GRANTS: frozenset[Grant] = frozenset([("", "secrets", "get")])


def lease_grants(name: str) -> frozenset[Grant]:
    lease = ("coordination.k8s.io", "leases")
    return frozenset([(*lease, f"get@{name}"), (*lease, f"update@{name}"), (*lease, "create")])
