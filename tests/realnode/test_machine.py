"""The real node leaves the machine as it found it: sysctls kubelet and the bridge plugin
set, the bridge, cgroups, mounts, files under /run and /var, nft tables."""

from __future__ import annotations

import pytest

from heapsnap.devcluster.harness import ClusterError
from heapsnap.devcluster.realnode import MachineState, RealNode
from tests.realnode.conftest import RealWorld
from tests.realnode.test_capture import PLANTED

pytestmark = [pytest.mark.realnode, pytest.mark.cluster, pytest.mark.slow]


def test_stopping_the_node_puts_the_machine_back_and_it_starts_again(world: RealWorld) -> None:
    world.target("before-stop", PLANTED, env={"COUNT": "10"})
    running = MachineState.read()
    # What kubelet and CNI changed while running: the test below would prove nothing otherwise.
    changed = world.node.before.differences(running)
    assert any(d.startswith("new link heapsnap0") for d in changed), changed
    assert any("kubepods" in d for d in changed), changed
    assert any(d.startswith("sysctl") for d in changed), changed
    # A second node on the same machine is refused: they would share /kubepods.
    with pytest.raises(ClusterError, match="another real node runs on this machine"):
        RealNode.start(world.cluster, world.node.workdir.parent / "second")
    old = world.node
    assert old.stop() == []
    world.node = RealNode.start(world.cluster, old.workdir)
    world.node.imported.clear()
    from heapsnap.devcluster import images

    world.node.import_image(images.operator_image())
    world.operator_pod(timeout=120)
