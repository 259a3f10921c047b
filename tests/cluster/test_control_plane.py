"""The local control plane is real: CRD validation with CEL, RBAC, Events, namespace
deletion by the controller manager, exec and port-forward through the API server to
real local Node.js processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import websockets
from kubernetes import client, stream
from kubernetes.client.rest import ApiException

from heapsnap.devcluster.harness import Cluster, free_port, wait_until
from tests.cluster.fixtures import NodePodFactory
from tests.cluster.streams import CdpOverStream, exec_ws, http_get, port_forward

pytestmark = pytest.mark.cluster

KEEPALIVE = "setInterval(() => {}, 1000);\n"
CAT = "process.stdout.write(require('fs').readFileSync(process.argv[1]))"


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Any]:
    """An admin ``ApiClient``, closed after the test (its pooled sockets with it)."""
    with cluster.api_client() as api_client:
        yield api_client


def _crd(group: str) -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["min", "max"],
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer", "maximum": 100},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "spec.min must not exceed spec.max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_schema_and_cel_rule_are_enforced(cluster: Cluster, namespace: str, api: Any) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.test.heapsnap.dev"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_crd(group)))
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=30s")
        custom = client.CustomObjectsApi(api)

        def widget(name: str, low: int, high: int) -> dict[str, object]:
            body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}}
            return {**body, "spec": {"min": low, "max": high}}

        custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("ok", 1, 2))
        with pytest.raises(ApiException) as cel:
            custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("bad", 5, 2))
        assert cel.value.status == 422
        assert "spec.min must not exceed spec.max" in cel.value.body
        with pytest.raises(ApiException) as schema:
            custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget("big", 1, 101))
        assert schema.value.status == 422
        assert "spec.max" in schema.value.body
        names = [
            i["metadata"]["name"]
            for i in custom.list_namespaced_custom_object(group, "v1", namespace, "widgets")["items"]
        ]
        assert names == ["ok"]
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_rbac_denies_what_was_not_granted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    identity = f"system:serviceaccount:{namespace}:reader"
    token_kubeconfig = cluster.kubeconfig_for_service_account(namespace, "reader")
    for api_client in (
        cluster.api_client(impersonate=identity),
        cluster.api_client(kubeconfig=token_kubeconfig),
    ):
        with api_client:
            _assert_only_pods_readable(client.CoreV1Api(api_client), namespace, identity)


def _assert_only_pods_readable(core: Any, namespace: str, identity: str) -> None:
    assert core.list_namespaced_pod(namespace).items == []
    with pytest.raises(ApiException) as secrets:
        core.list_namespaced_secret(namespace)
    assert secrets.value.status == 403
    assert identity in secrets.value.body
    with pytest.raises(ApiException) as other_namespace:
        core.list_namespaced_pod("default")
    assert other_namespace.value.status == 403


def test_events_are_recorded_and_readable(cluster: Cluster, namespace: str, api: Any) -> None:
    # Written with kubectl: the Python client re-serializes eventTime (MicroTime) without
    # the microseconds the API server requires.
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": "probe-", "namespace": namespace},
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "reportingController": "heapsnap.dev/test",
        "reportingInstance": "test-1",
        "action": "Probe",
        "reason": "Probed",
        "note": "the harness can record events",
        "type": "Normal",
        "regarding": {"kind": "Pod", "namespace": namespace, "name": "somepod", "apiVersion": "v1"},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(event))
    core = client.CoreV1Api(api)
    listed = core.list_namespaced_event(namespace, field_selector="involvedObject.name=somepod").items
    assert [(e.reason, e.message, e.type) for e in listed] == [
        ("Probed", "the harness can record events", "Normal")
    ]
    events = client.EventsV1Api(api).list_namespaced_event(namespace).items
    assert [e.note for e in events] == ["the harness can record events"]


def test_namespace_deletion_completes(cluster: Cluster) -> None:
    name = cluster.create_namespace(f"gone-{uuid.uuid4().hex[:6]}")
    cluster.kubectl("create", "configmap", "c", "-n", name)
    cluster.kubectl("delete", "namespace", name, "--timeout=60s")
    assert cluster.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name").stdout == ""


def test_node_pod_is_running_and_stops_cleanly(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, api: Any
) -> None:
    one = node_pod_factory(namespace, "one", script=KEEPALIVE, labels={"app": "demo"})
    two = node_pod_factory(
        namespace, "two", script=KEEPALIVE, node_version="22", extra_containers=["sidecar"]
    )
    assert one.pid != two.pid
    pod = client.CoreV1Api(api).read_namespaced_pod("two", namespace)
    assert pod.status.phase == "Running"
    assert pod.spec.node_name == cluster.node_name
    assert [c.name for c in pod.spec.containers] == ["app", "sidecar"]
    assert Path(f"/proc/{two.pid}/exe").resolve() == two.node.resolve()
    one.stop()
    assert one.popen.poll() is not None
    wait_until(
        "pod one deleted",
        lambda: (
            not cluster.kubectl(
                "get", "pod", "one", "-n", namespace, "--ignore-not-found", "-o", "name"
            ).stdout
        ),
        30,
    )


class Payload(NamedTuple):
    path: Path
    data: bytes


@pytest.fixture
def payload(tmp_path: Path) -> Payload:
    """1 MiB of random bytes in a file that ``node -e CAT <file>`` writes to stdout."""
    data = os.urandom(1 << 20)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return Payload(path, data)


def test_exec_with_the_official_client_is_byte_exact(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, payload: Payload, api: Any
) -> None:
    node_pod_factory(namespace, "target", script=KEEPALIVE)
    core = client.CoreV1Api(api)
    resp = stream.stream(
        core.connect_get_namespaced_pod_exec,
        "target",
        namespace,
        command=["node", "-e", CAT, str(payload.path)],
        container="app",
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        binary=True,
        _preload_content=False,
    )
    out = bytearray()
    try:
        while resp.is_open():
            resp.update(timeout=5)
            if resp.peek_stdout():
                out += resp.read_stdout()
        out += resp.read_stdout()
        assert resp.returncode == 0
    finally:
        resp.close()
        # websocket-client's close() returns early once the server has closed, leaving
        # the TLS socket open; shutdown() closes it.
        resp.sock.shutdown()
    assert bytes(out) == payload.data


@pytest.mark.parametrize("subprotocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
async def test_exec_over_raw_websocket(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, payload: Payload, subprotocol: str
) -> None:
    node_pod_factory(namespace, "target", script=KEEPALIVE)
    ok = await exec_ws(
        cluster, namespace, "target", ["node", "-e", CAT, str(payload.path)], subprotocols=[subprotocol]
    )
    assert ok.subprotocol == subprotocol
    assert ok.stdout == payload.data
    assert ok.exit_code == 0
    failed = await exec_ws(
        cluster,
        namespace,
        "target",
        ["node", "-e", "process.stderr.write('boom'); process.exit(3)"],
        container="app",
        subprotocols=[subprotocol],
    )
    assert (failed.stdout, failed.stderr, failed.exit_code) == (b"", b"boom", 3)
    # A real kubelet says NonZeroExitCode; kwok says InternalError (see streams.py).
    assert failed.status is not None and failed.status["status"] == "Failure"


async def test_exec_over_the_oldest_channel_protocol(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, payload: Payload
) -> None:
    node_pod_factory(namespace, "target", script=KEEPALIVE)
    ok = await exec_ws(
        cluster, namespace, "target", ["node", "-e", CAT, str(payload.path)], subprotocols=["channel.k8s.io"]
    )
    assert ok.subprotocol == "channel.k8s.io"
    assert ok.stdout == payload.data
    failed = await exec_ws(
        cluster, namespace, "target", ["node", "-e", "process.exit(3)"], subprotocols=["channel.k8s.io"]
    )
    # v1 has no Status: the error channel carries only the error's text.
    assert failed.status is None
    assert failed.error.endswith(b"exit status 3")


def _activate(pod_pid: int) -> None:
    os.kill(pod_pid, signal.SIGUSR1)


@pytest.mark.parametrize("activation", ["--inspect", "SIGUSR1"])
async def test_port_forward_to_the_inspector_completes_a_cdp_round_trip(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, activation: str
) -> None:
    args = ["--inspect=127.0.0.1:0"] if activation == "--inspect" else []
    pods = [node_pod_factory(namespace, f"app-{i}", script=KEEPALIVE, node_args=args) for i in range(2)]
    for pod in pods:
        if activation == "SIGUSR1":
            _activate(pod.pid)
    ports = [pod.inspector_port() for pod in pods]
    assert len(set(ports)) == 2
    for pod, port in zip(pods, ports, strict=True):
        async with port_forward(cluster, namespace, pod.name, port) as pf:
            targets = json.loads(await http_get(pf, "/json/list"))
        ws_path = "/" + targets[0]["webSocketDebuggerUrl"].split("/", 3)[3]
        async with port_forward(cluster, namespace, pod.name, port) as pf:
            cdp = CdpOverStream(pf, ws_path)
            await cdp.open()
            result = await cdp.call(
                "Runtime.evaluate", {"expression": "[1+1, process.pid]", "returnByValue": True}
            )
        assert result["result"]["result"]["value"] == [2, pod.pid]


async def test_port_forward_reports_a_closed_port(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory
) -> None:
    node_pod_factory(namespace, "target", script=KEEPALIVE)
    port = cluster.pod_port()
    async with port_forward(cluster, namespace, "target", port) as pf:
        assert await pf.recv() == b""
    assert b"connection refused" in bytes(pf.errors)


@pytest.mark.parametrize(
    ("env", "negotiated"),
    [
        ({}, "Sec-Websocket-Protocol: SPDY/3.1+portforward.k8s.io"),
        ({"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}, "Upgrade: SPDY/3.1"),
    ],
    ids=["websocket-tunnel", "spdy"],
)
def test_kubectl_port_forward_reaches_the_inspector(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory, env: dict[str, str], negotiated: str
) -> None:
    pod = node_pod_factory(namespace, "target", script=KEEPALIVE, node_args=["--inspect"])
    remote = pod.inspector_port()
    local = free_port()
    argv = [str(cluster.bin("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "-v=8", "-n", namespace]
    forward = subprocess.Popen(
        [*argv, "port-forward", "pod/target", f"{local}:{remote}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", local)) == 0

        wait_until("kubectl port-forward to listen", listening, 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/json/version", timeout=10) as response:
            assert json.load(response)["Browser"].startswith("node.js/")
    finally:
        forward.terminate()
        output = forward.communicate(timeout=10)[0]
    assert negotiated in output


async def test_exec_into_a_container_the_pod_does_not_have_is_refused(
    cluster: Cluster, namespace: str, node_pod_factory: NodePodFactory
) -> None:
    node_pod_factory(namespace, "target", script=KEEPALIVE)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await exec_ws(cluster, namespace, "target", ["node", "-v"], container="nope")
    assert refused.value.response.status_code == 400
    assert b"container nope is not valid" in refused.value.response.body
