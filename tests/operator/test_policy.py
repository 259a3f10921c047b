"""HeapSnapshotPolicy through the real API server: the policy loop, in this process with a
clock the test moves, against real pods on the kwok node and the HeapSnapshots it creates.

The captures themselves are the capture handler's (tests/operator/test_e2e.py); here no
operator runs, so the HeapSnapshots stay Pending unless a test finishes them by writing
their status as the capture handler would. kwok pods have no memory readings: the memory,
growth and restart triggers get theirs from a kubelet stats summary in the kubelet's own
JSON format (tests/operator/data/stats-summary.json) or from pod statuses written here.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from heapsnap.controller.metrics import Metrics
from heapsnap.controller.policy import PolicyController, headroom, view_pod
from heapsnap.k8s.api import ApiConnection, connect
from heapsnap.k8s.memory import KubeletSummary, Readings, parse_summary
from heapsnap.k8s.policy import POD_ANNOTATION, POLICY_LABEL, Amount, Trigger
from heapsnap.k8s.policyops import PolicyCluster
from tests.operator.conftest import events_for, wait_for
from tests.operator.test_policy_crd import apply_policy

pytestmark = [pytest.mark.policy, pytest.mark.cluster]

DATA = Path(__file__).parent / "data"
MiB = 1 << 20
TEMPLATE = {"storage": {"s3": {"bucket": "diag", "credentialsSecret": "s3"}}, "timeoutSeconds": 60}


class Clock:
    """The policy loop's time, moved by the test."""

    def __init__(self) -> None:
        self.value = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    def now(self) -> datetime.datetime:
        return self.value

    def set(self, when: datetime.datetime) -> None:
        self.value = when

    def advance(self, seconds: float) -> None:
        self.value += datetime.timedelta(seconds=seconds)


class StaticSource:
    """Readings from a kubelet stats summary document the test edits (one layer mocked:
    the HTTP request; parsing and matching are the real ones)."""

    name = "kubelet"

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {"pods": []}

    def set(
        self, namespace: str, pod: str, container: str, working_set: int, when: datetime.datetime
    ) -> None:
        entry = {
            "podRef": {"name": pod, "namespace": namespace, "uid": "x"},
            "containers": [
                {
                    "name": container,
                    "memory": {"time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "workingSetBytes": working_set},
                }
            ],
        }
        self.summary["pods"] = [p for p in self.summary["pods"] if p["podRef"]["name"] != pod] + [entry]

    async def read(self, namespace: str, pods: Sequence[Any]) -> Readings:
        names = {p.metadata.name for p in pods}
        found = parse_summary(self.summary)
        return {(r.pod, r.container): r for r in found if r.namespace == namespace and r.pod in names}


@pytest.fixture
def api(cluster: Any) -> Iterator[ApiConnection]:
    connection = connect(str(cluster.kubeconfig))
    try:
        yield connection
    finally:
        connection.api_client.close()


@pytest.fixture
def policy_crds(cluster: Any, crd: Path) -> None:
    from tests.operator.test_policy_crd import POLICY_CRD

    cluster.kubectl("apply", "--server-side", "-f", str(POLICY_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshotpolicies.heapsnap.dev"
    )


@pytest.fixture
def world(cluster: Any, policy_crds: None, namespace: str, api: ApiConnection) -> Iterator[World]:
    yield World(cluster, namespace, api)


class World:
    """The test's namespace, its pods, its policies and one policy loop with a movable clock."""

    def __init__(self, cluster: Any, namespace: str, api: ApiConnection) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.api = api
        self.clock = Clock()
        self.memory = StaticSource()
        self.metrics = Metrics()
        self.controller = self.new_controller()

    def new_controller(self, global_limit: int = 4) -> PolicyController:
        """A fresh loop, as after an operator restart: nothing but what is on the resources."""
        return PolicyController(
            PolicyCluster(self.api),
            self.memory,
            namespaces=[self.namespace],
            global_limit=global_limit,
            metrics=self.metrics,
            clock=self.clock,
        )

    def pod(self, name: str, *, labels: dict[str, str] | None = None, limit: str | None = None) -> None:
        """A pod on the kwok node (Running, no process: no capture runs here)."""
        container: dict[str, Any] = {"name": "app", "image": "node:22"}
        if limit:
            container["resources"] = {"limits": {"memory": limit}}
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels or {"app": "api"}},
            "spec": {"nodeName": self.cluster.node_name, "containers": [container]},
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_for(
            f"pod {name} Running", lambda: self.get("pod", name).get("status", {}).get("phase") == "Running"
        )

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        return dict(json.loads(out))

    def policy(self, name: str, **spec: Any) -> None:
        body = {"selector": {"matchLabels": {"app": "api"}}, "container": "app", "template": TEMPLATE, **spec}
        apply_policy(self.cluster, self.namespace, name, body)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get("heapsnapshotpolicy", name).get("status") or {})

    def snapshots(self, policy: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "heapsnapshots", "-n", self.namespace, "-l", f"{POLICY_LABEL}={policy}", "-o", "json"
        ).stdout
        return sorted(json.loads(out)["items"], key=lambda o: o["metadata"]["name"])

    def round(self, controller: PolicyController | None = None) -> None:
        asyncio.run((controller or self.controller).reconcile_all())

    def finish(self, name: str, phase: str, reason: str = "Succeeded", message: str = "") -> None:
        """Write a HeapSnapshot's status as the capture handler does when it finishes."""
        status = {
            "phase": phase,
            "completionTime": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [{"type": "Ready", "status": "True" if phase == "Succeeded" else "False",
                            "reason": reason, "message": message}],
        }  # fmt: skip
        if phase == "Failed":
            status["failure"] = {"reason": reason, "message": message}
        self.cluster.kubectl(
            "patch", "heapsnapshot", name, "-n", self.namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip

    def triggers(self, kind: str, outcome: str) -> float:
        value = self.metrics.policy_triggers.labels(self.namespace, kind, outcome)._value.get()
        return float(value)


def next_boundary(now: datetime.datetime, minutes: int) -> datetime.datetime:
    base = now.replace(second=0, microsecond=0)
    return base + datetime.timedelta(minutes=minutes - base.minute % minutes)


# -- the tests ------------------------------------------------------------------------


def test_schedule_fires_once_and_only_once_per_cooldown(world: World) -> None:
    world.pod("api-0")
    world.policy("nightly", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], cooldown="30m")
    world.round()  # the first round only computes the next time
    status = world.status("nightly")
    due = next_boundary(world.clock.now(), 10)
    assert status["nextScheduleTime"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert world.snapshots("nightly") == []
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "Active", 1)

    world.clock.set(due + datetime.timedelta(seconds=5))
    world.round()
    world.round()  # a second round at the same time changes nothing
    (snap,) = world.snapshots("nightly")
    meta = snap["metadata"]
    policy = world.get("heapsnapshotpolicy", "nightly")
    assert meta["ownerReferences"][0]["uid"] == policy["metadata"]["uid"]
    assert meta["ownerReferences"][0]["kind"] == "HeapSnapshotPolicy"
    assert meta["annotations"][POD_ANNOTATION] == "api-0"
    assert snap["spec"]["target"] == {"podName": "api-0", "container": "app"}
    assert snap["spec"]["storage"] == TEMPLATE["storage"]
    status = world.status("nightly")
    assert status["counts"] == {"triggered": 1, "created": 1}
    assert status["recent"][0]["name"] == meta["name"] and status["recent"][0]["trigger"] == "schedule"
    assert status["pods"][0]["pod"] == "api-0" and status["pods"][0]["outcome"] == "Created"
    assert status["active"] == 1

    # The next two schedule times fall inside the 30 min cooldown: skipped, and said so.
    for tick in (1, 2):
        world.clock.set(due + datetime.timedelta(minutes=10 * tick, seconds=5))
        world.round()
    assert len(world.snapshots("nightly")) == 1
    status = world.status("nightly")
    assert status["counts"] == {"triggered": 3, "created": 1, "skipped": 2}
    assert status["pods"][0]["outcome"] == "Cooldown"
    assert (world.triggers("schedule", "Created"), world.triggers("schedule", "Cooldown")) == (1, 2)
    reasons = [e["reason"] for e in events_for(world.cluster, world.namespace, "nightly")]
    assert "Triggered" in reasons and "SkippedCooldown" in reasons

    # Past the cooldown, and with the first capture finished (maxConcurrent 1), it captures again.
    world.finish(meta["name"], "Succeeded")
    world.clock.set(due + datetime.timedelta(minutes=30, seconds=5))
    world.round()
    assert len(world.snapshots("nightly")) == 2


def test_operator_restart_in_the_middle_of_a_cooldown(world: World) -> None:
    world.pod("api-0")
    world.policy("restarts", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], cooldown="1h")
    world.round()
    due = next_boundary(world.clock.now(), 10)
    world.clock.set(due + datetime.timedelta(seconds=1))
    world.round()
    assert len(world.snapshots("restarts")) == 1

    # A new operator (no memory of the last one) in the middle of the cooldown.
    for minutes in (10, 20, 30):
        world.clock.set(due + datetime.timedelta(minutes=minutes, seconds=1))
        world.round(world.new_controller())
    assert len(world.snapshots("restarts")) == 1
    assert world.status("restarts")["counts"]["skipped"] == 3

    # Even with the pods' records lost (an operator killed between creating the HeapSnapshot
    # and writing the status), the HeapSnapshot's own creation time keeps the cooldown.
    world.cluster.kubectl(
        "patch", "heapsnapshotpolicy", "restarts", "-n", world.namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"pods": None}}),
    )  # fmt: skip
    world.clock.set(due + datetime.timedelta(minutes=40, seconds=1))
    world.round(world.new_controller())
    assert len(world.snapshots("restarts")) == 1

    # After the cooldown, the next schedule time captures again.
    world.finish(world.snapshots("restarts")[0]["metadata"]["name"], "Succeeded")
    world.clock.set(due + datetime.timedelta(minutes=70, seconds=1))
    world.round(world.new_controller())
    world.clock.set(due + datetime.timedelta(minutes=80, seconds=1))
    world.round(world.new_controller())
    assert len(world.snapshots("restarts")) == 2


def test_history_limit_keeps_the_newest_finished_captures(world: World) -> None:
    world.pod("api-0")
    world.policy(
        "history",
        triggers=[{"schedule": {"cron": "*/10 * * * *"}}],
        cooldown="1m",
        maxConcurrent=1,
        historyLimit={"succeeded": 1, "failed": 1},
    )
    world.round()
    due = next_boundary(world.clock.now(), 10)
    made: list[str] = []
    for i, phase in enumerate(("Succeeded", "Succeeded", "Failed", "Failed", "Succeeded")):
        world.clock.set(due + datetime.timedelta(minutes=10 * i, seconds=1))
        world.round()
        names = {o["metadata"]["name"] for o in world.snapshots("history")}
        (new,) = names - set(made)
        made.append(new)
        world.finish(new, phase, reason="Succeeded" if phase == "Succeeded" else "PodNotFound")
    world.clock.advance(1)
    world.round()
    kept = {o["metadata"]["name"]: o["status"]["phase"] for o in world.snapshots("history")}
    assert kept == {made[3]: "Failed", made[4]: "Succeeded"}
    counts = world.status("history")["counts"]
    assert (counts["created"], counts["succeeded"], counts["failed"]) == (5, 3, 2)
    assert [r["name"] for r in world.status("history")["recent"]] == made[::-1]


def test_deleting_a_policy_stops_it_and_its_captures_go_with_it(world: World) -> None:
    world.pod("api-0")
    world.policy("gone", triggers=[{"schedule": {"cron": "*/10 * * * *"}}])
    world.round()
    world.clock.set(next_boundary(world.clock.now(), 10) + datetime.timedelta(seconds=1))
    world.round()
    assert len(world.snapshots("gone")) == 1
    world.cluster.kubectl("delete", "heapsnapshotpolicy", "gone", "-n", world.namespace)
    assert asyncio.run(world.controller.reconcile_all()) == 0
    # The garbage collector deletes what the policy owned.
    wait_for("the policy's HeapSnapshots to be collected", lambda: world.snapshots("gone") == [], 60)


def test_suspend_stops_triggers_and_skips_missed_schedules(world: World) -> None:
    world.pod("api-0")
    world.policy("paused", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], suspend=True)
    world.round()
    due = next_boundary(world.clock.now(), 10)
    world.clock.set(due + datetime.timedelta(seconds=1))
    world.round()
    status = world.status("paused")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert "nextScheduleTime" not in status and world.snapshots("paused") == []

    # Resumed after a missed schedule: that one does not run, the next one does.
    world.cluster.kubectl(
        "patch", "heapsnapshotpolicy", "paused", "-n", world.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": False}}),
    )  # fmt: skip
    world.clock.advance(60)
    world.round()
    assert world.snapshots("paused") == []
    status = world.status("paused")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["observedGeneration"]) == ("True", 2)
    world.clock.set(due + datetime.timedelta(minutes=10, seconds=1))
    world.round()
    assert len(world.snapshots("paused")) == 1


def test_max_concurrent_under_a_selector_of_several_pods(world: World) -> None:
    for i in range(4):
        world.pod(f"api-{i}")
    world.pod("other", labels={"app": "other"})
    world.policy("fleet", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], maxConcurrent=2, cooldown="1m")
    world.round()
    assert world.status("fleet")["matchedPods"] == 4
    due = next_boundary(world.clock.now(), 10)
    world.clock.set(due + datetime.timedelta(seconds=1))
    world.round()
    first = world.snapshots("fleet")
    assert len(first) == 2
    status = world.status("fleet")
    assert status["active"] == 2 and status["counts"]["skipped"] == 2
    outcomes = sorted(p["outcome"] for p in status["pods"])
    assert outcomes == ["Created", "Created", "MaxConcurrent", "MaxConcurrent"]

    # Still unfinished at the next schedule: nothing new. Once they finish, the pods not
    # captured yet go first.
    world.clock.set(due + datetime.timedelta(minutes=10, seconds=1))
    world.round()
    assert len(world.snapshots("fleet")) == 2
    for snap in first:
        world.finish(snap["metadata"]["name"], "Succeeded")
    world.clock.set(due + datetime.timedelta(minutes=20, seconds=1))
    world.round()
    pods = sorted(s["metadata"]["annotations"][POD_ANNOTATION] for s in world.snapshots("fleet"))
    assert pods == ["api-0", "api-1", "api-2", "api-3"]
    # A pod that goes away leaves the status once its cooldown is over.
    world.cluster.kubectl("delete", "pod", "api-3", "-n", world.namespace, "--grace-period=0", "--force")
    world.clock.set(due + datetime.timedelta(minutes=25))
    world.round()
    assert sorted(p["pod"] for p in world.status("fleet")["pods"]) == ["api-0", "api-1", "api-2"]

    # The operator's own limit holds whatever maxConcurrent says.
    world.policy("fleet", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], maxConcurrent=50, cooldown="1m")
    for snap in world.snapshots("fleet"):
        world.finish(snap["metadata"]["name"], "Succeeded")
    world.clock.set(due + datetime.timedelta(minutes=30, seconds=1))
    world.round(world.new_controller(global_limit=3))
    world.clock.set(due + datetime.timedelta(minutes=40, seconds=1))
    limited = world.new_controller(global_limit=3)
    world.round(limited)
    assert world.status("fleet")["active"] == 3


def test_a_policy_matching_200_pods_starts_no_more_than_the_operator_limit(world: World) -> None:
    pods = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"api-{i:03d}", "namespace": world.namespace, "labels": {"app": "api"}},
                "spec": {
                    "nodeName": world.cluster.node_name,
                    "containers": [{"name": "app", "image": "node:22"}],
                },
            }
            for i in range(200)
        ],
    }
    world.cluster.kubectl("apply", "-f", "-", input=json.dumps(pods))
    world.policy("everyone", triggers=[{"schedule": {"cron": "*/10 * * * *"}}], maxConcurrent=100)
    controller = world.new_controller(global_limit=4)

    def all_running() -> bool:
        world.round(controller)
        return world.status("everyone").get("matchedPods") == 200

    wait_for("200 Running pods", all_running, 120, interval=1)
    world.clock.set(next_boundary(world.clock.now(), 10) + datetime.timedelta(seconds=1))
    world.round(controller)
    assert len(world.snapshots("everyone")) == 4
    status = world.status("everyone")
    assert status["active"] == 4 and status["counts"] == {"triggered": 200, "created": 4, "skipped": 196}
    # One Event for the 196 pods skipped, not one each.
    (skip,) = [
        e for e in events_for(world.cluster, world.namespace, "everyone") if e["reason"] != "Triggered"
    ]
    assert skip["reason"] == "SkippedMaxConcurrent" and "196 pod(s) not captured" in skip["message"]


def test_headroom_condition_at_creation_says_whether_a_capture_fits(world: World) -> None:
    world.pod("api-0", limit="512Mi")
    world.policy("tight", triggers=[{"memory": {"above": "80%"}}])
    world.policy("roomy", triggers=[{"memory": {"above": "50Mi"}}])
    world.round()
    tight = {c["type"]: c for c in world.status("tight")["conditions"]}["Headroom"]
    assert (tight["status"], tight["reason"], tight["observedGeneration"]) == ("False", "NoRoomForCapture", 1)
    # The numbers: 80% of 512 MiB is 410 MiB, 102 MiB left, 270 B per object; 12% always fits.
    for words in ("spec.triggers[0].memory.above 80%", "512 MiB", "410 MiB", "102 MiB", "270 B", "(12% of"):
        assert words in tight["message"], tight["message"]
    roomy = {c["type"]: c for c in world.status("roomy")["conditions"]}["Headroom"]
    assert (roomy["status"], roomy["reason"]) == ("True", "RoomForCapture")
    reasons = [e["reason"] for e in events_for(world.cluster, world.namespace, "tight")]
    assert reasons.count("NoRoomForCapture") == 1

    world.pod("nolimit", labels={"app": "nolimit"})
    apply_policy(
        world.cluster, world.namespace, "unbounded",
        {"selector": {"matchLabels": {"app": "nolimit"}}, "triggers": [{"memory": {"above": "80%"}}],
         "template": TEMPLATE},
    )  # fmt: skip
    world.round()
    unbounded = {c["type"]: c for c in world.status("unbounded")["conditions"]}["Headroom"]
    assert unbounded["status"] == "False" and "has none: set resources.limits.memory" in unbounded["message"]


def test_memory_trigger_from_the_kubelet_stats_summary(world: World) -> None:
    world.pod("api-0", limit="512Mi")
    world.pod("api-1", limit="512Mi")
    world.policy("oom-watch", triggers=[{"memory": {"above": "400Mi"}}], cooldown="1h", maxConcurrent=5)
    now = world.clock.now()
    world.memory.set(world.namespace, "api-0", "app", 300 * MiB, now)
    world.memory.set(world.namespace, "api-1", "app", 350 * MiB, now)
    world.round()
    assert world.snapshots("oom-watch") == []
    readings = {c["type"]: c for c in world.status("oom-watch")["conditions"]}["MemoryReadings"]
    assert readings["status"] == "True"

    world.clock.advance(15)
    world.memory.set(world.namespace, "api-1", "app", 420 * MiB, world.clock.now())
    world.round()
    world.clock.advance(15)
    world.round()  # still above, in cooldown: no second capture, no record
    (snap,) = world.snapshots("oom-watch")
    assert snap["metadata"]["annotations"][POD_ANNOTATION] == "api-1"
    reason = world.status("oom-watch")["recent"][0]["reason"]
    assert "at 420 MiB of the 512 MiB limit, above 400 MiB, per kubelet" in reason, reason
    assert world.status("oom-watch")["counts"] == {"triggered": 1, "created": 1}
    assert world.triggers("memory", "Created") == 1

    # A capture that the preflight refused is reported on the policy, not as a dead pod.
    name = snap["metadata"]["name"]
    world.finish(name, "Failed", "InsufficientMemory", "Process 1 needs about 900 MiB more memory ...")
    world.round()
    status = world.status("oom-watch")
    assert status["counts"]["didNotFit"] == 1 and status["lastNotFitting"]["pod"] == "api-1"
    assert "would not fit" in status["lastNotFitting"]["message"]
    warnings = [e for e in events_for(world.cluster, world.namespace, "oom-watch") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings].count("CaptureDidNotFit") == 1


def test_growth_trigger_over_a_window(world: World) -> None:
    world.pod("api-0", limit="2Gi")
    world.policy("growing", triggers=[{"growth": {"by": "30%", "within": "10m"}}], cooldown="1h")
    start = world.clock.now()
    for minutes, working_set in ((0, 200), (4, 220), (8, 250), (12, 262)):
        world.clock.set(start + datetime.timedelta(minutes=minutes))
        world.memory.set(world.namespace, "api-0", "app", working_set * MiB, world.clock.now())
        world.round()
    # 200 -> 250 is 25% within 8 min; at 12 min the 200 reading left the 10 min window: 220 -> 262 is 19%.
    assert world.snapshots("growing") == []
    world.clock.set(start + datetime.timedelta(minutes=14))
    world.memory.set(world.namespace, "api-0", "app", 290 * MiB, world.clock.now())
    world.round()
    (snap,) = world.snapshots("growing")
    assert "grew from 220 MiB to 290 MiB" in snap["metadata"]["annotations"]["heapsnap.dev/trigger"]
    # Growing on, within the cooldown: no second capture.
    world.finish(snap["metadata"]["name"], "Succeeded")
    for minutes, working_set in ((16, 400), (20, 600)):
        world.clock.set(start + datetime.timedelta(minutes=minutes))
        world.memory.set(world.namespace, "api-0", "app", working_set * MiB, world.clock.now())
        world.round()
    assert len(world.snapshots("growing")) == 1
    # Past it, the growth still within the window captures again.
    world.clock.set(start + datetime.timedelta(minutes=75))
    world.memory.set(world.namespace, "api-0", "app", 900 * MiB, world.clock.now())
    world.round()
    world.clock.set(start + datetime.timedelta(minutes=76))
    world.memory.set(world.namespace, "api-0", "app", 1200 * MiB, world.clock.now())
    world.round()
    assert len(world.snapshots("growing")) == 2


def test_restart_trigger_arms_a_capture_of_the_replacement(world: World) -> None:
    world.pod("api-0", limit="512Mi")
    world.policy("after-oom", triggers=[{"restart": {"reason": "OOMKilled", "after": "5m"}}], cooldown="1h")
    world.round()
    # The container is OOM-killed and replaced: the pod's status as the kubelet writes it.
    died = world.clock.now() + datetime.timedelta(seconds=30)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    status = {
        "containerStatuses": [{
            "name": "app", "image": "node:22", "imageID": "", "ready": True, "restartCount": 1,
            "started": True,
            "state": {"running": {"startedAt": stamp(died + datetime.timedelta(seconds=1))}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                         "startedAt": stamp(died - datetime.timedelta(hours=1)),
                                         "finishedAt": stamp(died)}},
        }]
    }  # fmt: skip
    world.cluster.kubectl(
        "patch", "pod", "api-0", "-n", world.namespace, "--subresource=status", "--type=strategic",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    world.clock.set(died + datetime.timedelta(minutes=2))
    world.round()
    assert world.snapshots("after-oom") == []  # the replacement has not warmed up yet
    world.clock.set(died + datetime.timedelta(minutes=6))
    world.round()
    world.clock.advance(60)
    world.round()
    (snap,) = world.snapshots("after-oom")
    assert "restarted (OOMKilled, restart 1)" in snap["metadata"]["annotations"]["heapsnap.dev/trigger"]
    assert world.status("after-oom")["pods"][0]["restartCount"] == 1


def test_a_policy_the_api_server_accepts_but_the_operator_cannot_use_says_why(world: World) -> None:
    world.policy("mars", triggers=[{"schedule": {"cron": "@daily", "timeZone": "Mars/Olympus_Mons"}}])
    world.round()
    ready = {c["type"]: c for c in world.status("mars")["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.triggers[0].schedule.timeZone" in ready["message"]


# -- units: the stats summary, the headroom rule ------------------------------------------


def test_parse_a_kubelet_stats_summary() -> None:
    summary = json.loads((DATA / "stats-summary.json").read_text())
    readings = {(r.namespace, r.pod, r.container): r for r in parse_summary(summary)}
    app = readings[("shop", "api-7d9f8-x2k4q", "app")]
    assert app.working_set == 424280064 and app.time.isoformat() == "2026-12-04T10:15:19+00:00"
    assert readings[("shop", "api-7d9f8-x2k4q", "envoy")].working_set == 35655680
    # A container just started reports 0; one with no memory figures yet is left out.
    assert readings[("shop", "api-7d9f8-m8zzt", "app")].working_set == 0
    assert ("shop", "api-7d9f8-m8zzt", "envoy") not in readings
    assert len(readings) == 4


def test_kubelet_source_asks_each_node_once_per_poll() -> None:
    summary = json.loads((DATA / "stats-summary.json").read_text())
    calls: list[str] = []

    class Api:  # the API connection, one layer down
        async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        def get(self, path: str, response_type: str) -> Any:
            calls.append(path)
            return summary

    from kubernetes.client import V1ObjectMeta, V1Pod, V1PodSpec

    pods = [
        V1Pod(
            metadata=V1ObjectMeta(name=n, namespace="shop"),
            spec=V1PodSpec(containers=[], node_name="worker-1"),
        )
        for n in ("api-7d9f8-x2k4q", "api-7d9f8-m8zzt")
    ]
    source = KubeletSummary(Api(), max_age=60)  # type: ignore[arg-type]
    first = asyncio.run(source.read("shop", pods))
    second = asyncio.run(source.read("shop", pods[:1]))
    assert calls == ["/api/v1/nodes/worker-1/proxy/stats/summary"]
    assert first[("api-7d9f8-x2k4q", "app")].working_set == 424280064 and len(first) == 3
    assert set(second) == {("api-7d9f8-x2k4q", "app"), ("api-7d9f8-x2k4q", "envoy")}


@pytest.mark.parametrize(
    ("above", "limit", "fits"),
    [
        (Amount(percent=80), 512 * MiB, False),
        (Amount(percent=12), 512 * MiB, True),
        (Amount(bytes=900 * MiB), 1 << 30, False),
    ],
)
def test_headroom_rule(above: Amount, limit: int, fits: bool) -> None:
    verdict = headroom(Trigger("memory", 0, above=above), limit, "app")
    assert verdict.fits is fits


def test_view_pod_ignores_pods_that_are_not_running() -> None:
    from kubernetes.client import V1Container, V1ObjectMeta, V1Pod, V1PodSpec, V1PodStatus

    pod = V1Pod(
        metadata=V1ObjectMeta(name="p"),
        spec=V1PodSpec(containers=[V1Container(name="app")]),
        status=V1PodStatus(phase="Pending"),
    )
    assert view_pod(pod, "app", {}) is None


POD_METRICS = {
    "kind": "PodMetricsList",
    "apiVersion": "metrics.k8s.io/v1beta1",
    "metadata": {},
    "items": [
        {
            "metadata": {
                "name": "api-7d9f8-x2k4q",
                "namespace": "shop",
                "creationTimestamp": "2026-12-04T10:15:30Z",
            },
            "timestamp": "2026-12-04T10:15:19Z",
            "window": "15.012s",
            "containers": [
                {"name": "app", "usage": {"cpu": "31820019n", "memory": "414336Ki"}},
                {"name": "envoy", "usage": {"cpu": "4102871n", "memory": "34820Ki"}},
            ],
        }
    ],
}


def test_metrics_api_readings_and_the_kubelet_fallback() -> None:
    """metrics.k8s.io where it is served (its figure is the same working set, in Ki), the
    kubelets' summaries where it is not."""
    from kubernetes.client import V1ObjectMeta, V1Pod, V1PodSpec
    from kubernetes.client.exceptions import ApiException

    from heapsnap.k8s.memory import AutoSource, parse_pod_metrics

    (app, envoy) = parse_pod_metrics(POD_METRICS)
    assert (app.pod, app.container, app.working_set) == ("api-7d9f8-x2k4q", "app", 414336 * 1024)
    assert envoy.source == "metrics.k8s.io"
    summary = json.loads((DATA / "stats-summary.json").read_text())
    served = {"metrics": True}
    calls: list[str] = []

    class Api:
        async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        def get(self, path: str, response_type: str) -> Any:
            calls.append(path)
            if path.startswith("/apis/metrics.k8s.io"):
                if not served["metrics"]:
                    raise ApiException(status=404, reason="Not Found")
                return POD_METRICS if "/namespaces/" in path else {"kind": "APIResourceList"}
            return summary

    pods = [
        V1Pod(
            metadata=V1ObjectMeta(name="api-7d9f8-x2k4q"), spec=V1PodSpec(containers=[], node_name="worker-1")
        )
    ]
    source = AutoSource(Api(), recheck=0)  # type: ignore[arg-type]
    found = asyncio.run(source.read("shop", pods))
    assert found[("api-7d9f8-x2k4q", "app")].source == "metrics.k8s.io" and source.name == "metrics.k8s.io"
    served["metrics"] = False
    found = asyncio.run(source.read("shop", pods))
    assert found[("api-7d9f8-x2k4q", "app")].working_set == 424280064 and source.name == "kubelet"
    assert calls[-1] == "/api/v1/nodes/worker-1/proxy/stats/summary"
