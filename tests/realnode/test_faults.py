"""Faults in the middle of a capture on the real node: the target's pod deleted, the
operator's pod deleted (a real kubelet's SIGTERM and grace period) or killed (SIGKILL
through containerd), kubelet restarted. After each: the HeapSnapshot says what happened,
nothing is left in the target or the bucket."""

from __future__ import annotations

import pytest

from tests.operator.test_e2e import failure
from tests.realnode.conftest import OPERATOR_NAMESPACE, RealWorld
from tests.realnode.test_capture import LEAKY, PLANTED

pytestmark = [pytest.mark.realnode, pytest.mark.cluster, pytest.mark.s3, pytest.mark.slow]

# About 1.5 M objects: a capture of several seconds, long enough to interrupt.
BIG = {"COUNT": "1500000"}


def test_target_pod_deleted_mid_capture(world: RealWorld) -> None:
    target = world.target("doomed", LEAKY, env=BIG)
    before = world.objects()
    world.apply("doomed", world.snapshot_spec("doomed", transfer="stream"))
    world.under_way("doomed")
    world.cluster.kubectl("delete", "pod", "doomed", "-n", target.namespace, "--grace-period=0", "--force")
    obj = world.wait_phase("doomed")
    reason, message = failure(obj)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    assert reason in ("TargetExited", "TargetNotFound", "PodDeleted"), (reason, message)
    assert world.objects() == before and world.uploads() == []


def test_operator_pod_deleted_mid_capture_stops_cleanly(world: RealWorld) -> None:
    """A rollout: the kubelet sends SIGTERM and waits the chart's grace period."""
    target = world.target("rollout", LEAKY, env=BIG)
    world.apply("rollout", world.snapshot_spec("rollout", transfer="stream"))
    world.under_way("rollout")
    operator = world.operator_pod()["metadata"]["name"]
    world.cluster.kubectl("delete", "pod", operator, "-n", OPERATOR_NAMESPACE, "--wait=true", "--timeout=60s")
    # The stopping operator aborted its upload itself, before its pod was gone.
    assert world.uploads() == []
    obj = world.wait_phase("rollout")
    reason, message = failure(obj)
    assert reason in ("OperatorStopped", "OperatorRestarted"), (reason, message)
    assert world.operator_pod()["metadata"]["name"] != operator
    assert target.leftovers() == [], "the inspector or a file was left in the target"


def test_operator_killed_mid_capture_is_recovered_by_the_next(world: RealWorld) -> None:
    target = world.target("killed", LEAKY, env=BIG)
    world.apply("killed", world.snapshot_spec("killed", transfer="stream"))
    world.under_way("killed")
    pod = world.operator_pod()
    world.node.kill_container(OPERATOR_NAMESPACE, pod["metadata"]["name"], "operator")
    obj = world.wait_phase("killed")
    reason, message = failure(obj)
    assert reason == "OperatorRestarted", (reason, message)
    assert world.uploads() == []
    assert target.leftovers() == [], "the successor did not close what the killed operator opened"


def test_kubelet_restarted_mid_capture(world: RealWorld) -> None:
    """exec and port-forward cross the kubelet: restarting it cuts the streams. The
    capture ends (either way) with nothing left, and the next one succeeds."""
    target = world.target("kubelet", LEAKY, env=BIG)
    world.apply("kubelet", world.snapshot_spec("kubelet", transfer="stream"))
    world.under_way("kubelet")
    world.node.restart_kubelet()
    obj = world.wait_phase("kubelet")
    status = obj["status"]
    if status["phase"] == "Failed":
        reason, message = failure(obj)
        assert reason and "kubelet" not in reason.lower(), (reason, message)
        assert message, obj
    world.cluster.kubectl("wait", "--for=condition=Ready", f"node/{world.node.name}", "--timeout=60s")
    assert world.uploads() == []
    assert target.leftovers() == []
    world.target("after", PLANTED, env={"COUNT": "10"})
    world.apply("after", world.snapshot_spec("after"))
    assert world.wait_phase("after")["status"]["phase"] == "Succeeded"
