"""spec.redact end to end: the kubectl plugin's --redact, the real API server (schema and
printer column), the operator as its own process, a real Node.js process holding a
secret, and the real S3 server the snapshot lands in."""

from __future__ import annotations

import gzip
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heapsnap.analysis.reader import read_snapshot
from heapsnap.analysis.views import analyze
from tests.operator.conftest import OperatorProcess, apply_snapshot, get_snapshot
from tests.operator.test_e2e import failure, kubectl_heapsnap
from tests.support.nodeproc import SECRET_APP

pytestmark = [pytest.mark.cluster, pytest.mark.s3]


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_redact_that_is_not_a_boolean_is_rejected_naming_the_field(
    cluster: Any, crd: Path, namespace: str, value: object
) -> None:
    spec = {"target": {"podName": "a"}, "storage": {"s3": {"bucket": "snaps"}}, "redact": value}
    with pytest.raises(subprocess.CalledProcessError) as info:
        apply_snapshot(cluster, namespace, "bad", spec)
    assert "spec.redact" in info.value.stderr and "boolean" in info.value.stderr


def test_the_plugin_captures_a_redacted_snapshot_through_the_operator(
    cluster: Any,
    namespace: str,
    node_pod_factory: Any,
    start_operator: Callable[..., OperatorProcess],
    s3: Any,
    credentials: str,
    tmp_path: Path,
) -> None:
    secret = "sk_live_" + secrets.token_hex(16)
    pod = node_pod_factory(namespace, "payments", script=SECRET_APP, env={"SECRET": secret})
    start_operator()
    captured = kubectl_heapsnap(
        cluster, namespace,
        "capture", "payments", "--pid", str(pod.pid), "--redact", "--s3", f"s3://{s3.bucket}/redacted",
        "--endpoint", s3.endpoint, "--region", "us-east-1", "--path-style",
        "--credentials-secret", credentials, "--wait",
    )  # fmt: skip
    assert captured.returncode == 0, captured.stderr
    name = captured.stdout.split("heapsnapshot.heapsnap.dev/")[1].split()[0]
    obj = get_snapshot(cluster, namespace, name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", failure(obj)
    assert obj["spec"]["redact"] is True and status["artifact"]["redacted"] is True
    wide = cluster.kubectl("get", "hsnap", name, "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert row.split()[header.split().index("REDACTED")] == "true", wide

    bucket, key = status["artifact"]["uri"][len("s3://") :].split("/", 1)
    body = gzip.decompress(s3.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert secret.encode() not in body and secret[8:24].encode() not in body
    path = tmp_path / "redacted.heapsnapshot"
    path.write_bytes(body)
    rows = {row.name: row for row in analyze(read_snapshot(path)).summary()}
    assert rows["SecretHolder"].count == 5000
    counts = {c["name"]: c["count"] for c in status["summary"]["topConstructors"]}
    assert counts.get("SecretHolder") == 5000
