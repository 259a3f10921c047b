"""The Kubernetes layer on the real API server: PodHost's exec and port-forward, the Lease."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import pytest

from heapsnap.controller.leader import LeaderElector
from heapsnap.errors import PodError
from heapsnap.k8s.api import connect
from heapsnap.k8s.podhost import PodHost
from tests.operator.conftest import wait_for
from tests.support.nodeproc import LEAKY_APP

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio(loop_scope="session")]

BLOB_SCRIPT = (
    "const b = Buffer.alloc(3 << 20); for (let i = 0; i < b.length; i++) b[i] = (i * 7919) & 255;"
    "process.stdout.write(b, () => process.exit(3));"
)


def expected_blob() -> bytes:
    return bytes((i * 7919) & 255 for i in range(3 << 20))


async def test_exec_is_binary_safe_and_reports_the_exit_code(
    cluster: Any, namespace: str, node_pod_factory: Any
) -> None:
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "10"})
    host = PodHost(connect(str(cluster.kubeconfig)), namespace, "app", "app")
    received = bytearray()

    async def on_stdout(data: bytes) -> None:
        received.extend(data)

    result = await host.run([str(pod.node), "-e", BLOB_SCRIPT], stdout=on_stdout, timeout=60)
    assert result.exit_code == 3
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(expected_blob()).hexdigest()
    missing = await host.run(["/no/such/binary"], timeout=30)
    assert missing.exit_code != 0


async def test_exec_into_a_missing_pod_is_pod_not_found(cluster: Any, namespace: str) -> None:
    host = PodHost(connect(str(cluster.kubeconfig)), namespace, "nope", "app")
    with pytest.raises(PodError) as info:
        await host.run(["true"], timeout=30)
    assert info.value.reason == "PodNotFound"


async def test_port_forward_reaches_the_pod(cluster: Any, namespace: str, node_pod_factory: Any) -> None:
    port = cluster.pod_port()  # kwok forwards pod port P to 127.0.0.1:P for these
    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "10", "PORT": str(port)})
    wait_for("the app's ready line", lambda: re.search(rb"ready \d+", pod.output()), 30)
    host = PodHost(connect(str(cluster.kubeconfig)), namespace, "app", "app")
    async with host.connect_port(port) as (address, local):
        for _ in range(2):
            reader, writer = await asyncio.open_connection(address, local)
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            # The websocket port-forward protocol has no half-close: read by Content-Length.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
            body = await asyncio.wait_for(reader.readexactly(length), 30)
            writer.close()
            await writer.wait_closed()
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok 10"


async def test_only_one_elector_holds_the_lease(cluster: Any, namespace: str) -> None:
    api = connect(str(cluster.kubeconfig))
    a = LeaderElector(api, "lease", namespace, "a", duration_seconds=5)
    b = LeaderElector(api, "lease", namespace, "b", duration_seconds=5)
    assert await a._try()
    assert not await b._try()
    assert await a._try(), "the holder renews"
    await a.release()
    assert await b._try()
    assert not await a._try()


async def test_demo_captures_through_an_in_process_operator(
    cluster: Any, crd: Any, namespace: str, node_pod_factory: Any, s3: Any
) -> None:
    from heapsnap.controller.demo import capture_with_operator
    from heapsnap.sinks.s3 import S3Config

    pod = node_pod_factory(namespace, "app", script=LEAKY_APP, env={"LEAKY_COUNT": "20000"})
    config = S3Config(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint,
        region="us-east-1",
        force_path_style=True,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )
    phases: list[str] = []
    obj = await capture_with_operator(
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
        pod="app",
        s3=config,
        pid=pod.pid,
        method="inspector",
        timeout_seconds=120,
        on_update=lambda status: phases.append(str(status.get("phase"))),
    )
    assert obj["status"]["phase"] == "Succeeded", obj["status"].get("failure")
    assert phases[-1] == "Succeeded" and "LeakyThing" in str(obj["status"]["summary"])
