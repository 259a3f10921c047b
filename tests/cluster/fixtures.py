"""pytest plugin: the real control plane (``cluster``), fresh namespaces and Node.js pods.

The session starts one cluster the first time a test asks for it and stops every one of
its processes at the end, also when tests fail. Missing binaries fail the fixture (run
``bash dev/setup.sh``); they never skip a test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from heapsnap.devcluster.harness import Cluster, ClusterError, NodePod, missing_binaries

_names = itertools.count(1)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"control-plane binaries missing ({', '.join(missing)}): run `bash dev/setup.sh`",
            pytrace=False,
        )
    started = Cluster.start(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = cluster.create_namespace(f"t{next(_names)}-{base}")
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


class NodePodFactory(Protocol):
    def __call__(self, namespace: str, name: str, *, script: str, **kwargs: Any) -> NodePod: ...


@pytest.fixture
def node_pod_factory(cluster: Cluster) -> Iterator[NodePodFactory]:
    """``start_node_pod`` whose processes and pods are removed after the test."""
    pods: list[NodePod] = []

    def start(namespace: str, name: str, *, script: str, **kwargs: Any) -> NodePod:
        pod = cluster.start_node_pod(namespace, name, script=script, **kwargs)
        pods.append(pod)
        return pod

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for pod in pods:
            try:
                pod.stop()
            except (ClusterError, OSError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
