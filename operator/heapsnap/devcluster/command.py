"""``dev/cluster up [--real-node]|down|env``: a long-lived local cluster for trying heapsnap
by hand, the same one the tests start. State and logs live in $HEAPSNAP_CACHE/dev-cluster."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from heapsnap.devcluster.harness import Cluster, ClusterError, cache_dir

USAGE = "usage: dev/cluster up [--real-node] | env | down"


def dev_state_dir() -> Path:
    return cache_dir() / "dev-cluster"


def _up(state: Path, real_node: bool) -> int:
    with contextlib.suppress(ClusterError):
        existing = Cluster.attach(state)
        if existing.alive():
            print(f"export KUBECONFIG={existing.kubeconfig}")
            return 0
        existing.stop()
    _down(state)
    started = time.monotonic()
    cluster = Cluster.start(state, tie_to_parent=False, scheduler=real_node)
    print(f"# cluster up in {time.monotonic() - started:.1f} s; logs in {state / 'logs'}", file=sys.stderr)
    if real_node:
        from heapsnap.devcluster import images
        from heapsnap.devcluster.realnode import RealNode

        try:
            node = RealNode.start(cluster, state / "node", tie_to_parent=False)
            built = [
                images.operator_image(),
                images.node_image("distroless", "20"),
                images.node_image("debian", "20"),
            ]
            for image in built:
                node.import_image(image)
        except BaseException:
            _down(state)
            raise
        names = ", ".join(image.name for image in built)
        print(
            f"# real node {node.name} ({node.ip}) up; images {names} (imagePullPolicy: Never); "
            f"the API server is at https://{node.ip}:{cluster.server.rsplit(':', 1)[1]} for pods",
            file=sys.stderr,
        )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def _down(state: Path) -> int:
    with contextlib.suppress(ClusterError, OSError, ValueError):
        cluster = Cluster.attach(state)
        if (state / "node" / "state.json").exists():
            from heapsnap.devcluster.realnode import RealNode

            left = RealNode.attach(cluster, state / "node").stop()
            if left:
                print(f"# the real node left the machine changed: {left}", file=sys.stderr)
        cluster.stop()
    shutil.rmtree(state, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command, options = (args[0] if args else "help"), args[1:]
    state = dev_state_dir()
    if command == "up" and options in ([], ["--real-node"]):
        return _up(state, real_node=options == ["--real-node"])
    if command == "env":
        cluster = Cluster.attach(state)
        if not cluster.alive():
            print("the dev cluster is not running: run `dev/cluster up`", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if command == "down":
        return _down(state)
    print(USAGE, file=sys.stderr)
    return 2
