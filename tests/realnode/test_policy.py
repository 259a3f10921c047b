"""HeapSnapshotPolicy on the real node: memory readings from the real kubelet's stats
summary through the API server, a Node.js target that grows on request (SIGUSR2 from the
host), a real OOM kill and restart; the operator is the chart's, from its image."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from heapsnap.devcluster.harness import wait_until
from tests.realnode.conftest import OPERATOR_NAMESPACE, RELEASE, WATCHED, RealWorld

pytestmark = [pytest.mark.policy]

MiB = 1 << 20
# Grows by 128 MiB of external memory (Buffers, resident once filled) per SIGUSR2: the working
# set rises while the heap stays small, so the capture's preflight lets it through.
GROWER = r"""
const kept = [];
process.on('SIGUSR2', () => {
  for (let i = 0; i < 8; i++) kept.push(Buffer.alloc(16 << 20, 1));
  console.log('grew', kept.length);
});
setInterval(() => {}, 1000);
console.log('ready');
"""
# On SIGUSR2, allocates until the kernel OOM-kills the container.
BALLOON = r"""
const kept = [];
process.on('SIGUSR2', () => { for (;;) kept.push(Buffer.alloc(16 << 20, 1)); });
setInterval(() => {}, 1000);
console.log('ready');
"""


@pytest.fixture
def node_stats(world: RealWorld) -> Iterator[None]:
    """What an admin grants a namespaced install for the kubelet path: get on nodes/proxy
    (the chart grants it itself only in cluster-wide mode)."""
    name = "heapsnap-test-node-stats"
    world.cluster.kubectl("create", "clusterrole", name, "--verb=get", "--resource=nodes/proxy")
    world.cluster.kubectl(
        "create", "clusterrolebinding", name, f"--clusterrole={name}",
        f"--serviceaccount={OPERATOR_NAMESPACE}:{RELEASE}",
    )  # fmt: skip
    try:
        yield
    finally:
        world.cluster.kubectl(
            "delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False
        )


def policy(world: RealWorld, name: str, pod_label: str, triggers: list[dict[str, Any]]) -> None:
    template = world.snapshot_spec("unused")
    del template["target"]
    manifest = {
        "apiVersion": "heapsnap.dev/v1alpha1",
        "kind": "HeapSnapshotPolicy",
        "metadata": {"name": name, "namespace": WATCHED},
        "spec": {
            "selector": {"matchLabels": {"app": pod_label}},
            "container": "app",
            "triggers": triggers,
            "template": template,
            "cooldown": "1h",
        },
    }
    world.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def status(world: RealWorld, name: str) -> dict[str, Any]:
    out = world.cluster.kubectl("get", "heapsnapshotpolicy", name, "-n", WATCHED, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def condition(world: RealWorld, name: str, type_: str) -> dict[str, Any] | None:
    for cond in status(world, name).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def owned(world: RealWorld, name: str) -> list[dict[str, Any]]:
    out = world.cluster.kubectl(
        "get", "heapsnapshots", "-n", WATCHED, "-l", f"heapsnap.dev/policy={name}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def working_set(world: RealWorld, pod: str) -> int:
    """The container's working set as the kubelet reports it (what the operator reads)."""
    for entry in world.node.summary()["pods"]:
        if entry["podRef"]["name"] == pod and entry["podRef"]["namespace"] == WATCHED:
            for container in entry.get("containers") or []:
                if container["name"] == "app" and "workingSetBytes" in (container.get("memory") or {}):
                    return int(container["memory"]["workingSetBytes"])
    return 0


def test_memory_threshold_on_real_readings_captures_once(world: RealWorld, node_stats: None) -> None:
    target = world.target("grower", GROWER, memory="384Mi", labels={"app": "grower"})
    policy(world, "grower-memory", "grower", [{"memory": {"above": "100Mi"}}])
    wait_until(
        "the policy to read the container's working set from the kubelet",
        lambda: (condition(world, "grower-memory", "MemoryReadings") or {}).get("status") == "True",
        90,
        interval=1,
    )
    before = working_set(world, "grower")
    assert 0 < before < 100 * MiB, before
    assert owned(world, "grower-memory") == []
    headroom = condition(world, "grower-memory", "Headroom")
    assert headroom is not None and "384 MiB" in headroom["message"]

    os.kill(target.pid(), signal.SIGUSR2)  # +128 MiB of resident Buffers
    seen: list[int] = []

    def grown() -> bool:
        seen.append(working_set(world, "grower"))
        return seen[-1] > 100 * MiB

    try:
        wait_until("the working set above 100 MiB", grown, 60, interval=1)
    except Exception as error:
        logs = world.cluster.kubectl("logs", "grower", "-n", WATCHED, check=False).stdout
        raise AssertionError(
            f"{error}: working sets {sorted(set(seen))}, before {before}; logs: {logs}"
        ) from None
    (snap,) = wait_until_value(lambda: owned(world, "grower-memory"), "the policy's capture", 90)
    name = snap["metadata"]["name"]
    reason = snap["metadata"]["annotations"]["heapsnap.dev/trigger"]
    assert "of the 384 MiB limit, above 100 MiB, per kubelet" in reason, reason
    print(f"\n{name}: {reason}")
    done = world.wait_phase(name)
    assert done["status"]["phase"] == "Succeeded", done["status"].get("failure")
    assert done["status"]["target"]["pod"] == "grower"
    assert "Triggered" in world.events("grower-memory")
    # Still above the threshold, but in cooldown: no second capture, whatever more it grows.
    os.kill(target.pid(), signal.SIGUSR2)
    # A round after the capture finished (it records the phase) still found it above: no second.
    wait_until(
        "a policy round after the capture",
        lambda: status(world, "grower-memory")["recent"][0].get("phase") == "Succeeded",
        60,
        interval=1,
    )
    assert working_set(world, "grower") > 100 * MiB
    recorded = status(world, "grower-memory")
    assert recorded["counts"]["created"] == 1 and recorded["recent"][0]["name"] == name
    assert len(owned(world, "grower-memory")) == 1
    listing = world.kubectl_heapsnap("list")
    assert listing.returncode == 0 and "grower-memory" in listing.stdout, listing.stderr


def test_restart_trigger_after_a_real_oom_kill(world: RealWorld) -> None:
    target = world.target("balloon", BALLOON, memory="128Mi", labels={"app": "balloon"})
    policy(world, "after-oom", "balloon", [{"restart": {"reason": "OOMKilled", "after": "5s"}}])
    wait_until("the policy to see the pod", lambda: status(world, "after-oom").get("matchedPods") == 1, 60)
    os.kill(target.pid(), signal.SIGUSR2)
    wait_until("the container to be OOM-killed and restarted", lambda: target.restarts() >= 1, 90, interval=1)
    last = target.pod()["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["reason"] == "OOMKilled"
    (snap,) = wait_until_value(lambda: owned(world, "after-oom"), "the capture of the replacement", 120)
    why = snap["metadata"]["annotations"]["heapsnap.dev/trigger"]
    assert "restarted (OOMKilled, restart 1)" in why, why
    print(f"\n{snap['metadata']['name']}: {why}")
    done = world.wait_phase(snap["metadata"]["name"])
    assert done["status"]["phase"] == "Succeeded", done["status"].get("failure")
    assert done["status"]["target"]["restartCount"] == 1


def wait_until_value(check: Any, what: str, timeout: float) -> Any:
    found: list[Any] = []

    def ready() -> bool:
        value = check()
        if value:
            found.append(value)
            return True
        return False

    wait_until(what, ready, timeout, interval=1)
    return found[0]
