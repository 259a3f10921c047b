"""Fixtures for the operator's end-to-end tests: the CRD on the real API server, and the
operator itself as a subprocess (so a test can kill it with SIGKILL and start it again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "heapsnap.dev_heapsnapshots.yaml"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def crd(cluster: Any) -> Path:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshots.heapsnap.dev")
    return CRD


@dataclass
class OperatorProcess:
    """``python -m heapsnap.controller`` against the test cluster, with its log kept."""

    kubeconfig: Path
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    def start(self) -> OperatorProcess:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "heapsnap.controller"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env},
                cwd=ROOT,
                start_new_session=True,
            )
        self.starts.append(time.monotonic())
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a node dies."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``GET /metrics`` (the operator must run with a known HEAPSNAP_HEALTH_PORT): each
        sample by name and labels."""
        url = f"http://127.0.0.1:{self.env['HEAPSNAP_HEALTH_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
def start_operator(
    cluster: Any, crd: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts operators watching only the test's namespace; stops them all afterwards."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        settings = {
            "HEAPSNAP_WATCH_NAMESPACES": namespace,
            "HEAPSNAP_LEASE_NAMESPACE": namespace,
            "HEAPSNAP_HEALTH_PORT": "0",
            "POD_NAME": "operator-0",
            "HEAPSNAP_LOG_LEVEL": "INFO",
            **env,
        }
        process = OperatorProcess(cluster.kubeconfig, tmp_path / f"operator-{len(started)}.log", settings)
        started.append(process.start())
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


def get_snapshot(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "heapsnapshot", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out))


def wait_finished(cluster: Any, namespace: str, name: str, timeout: float = 120.0) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        obj = get_snapshot(cluster, namespace, name)
        phase = (obj.get("status") or {}).get("phase")
        return obj if phase in ("Succeeded", "Failed") else None

    result: dict[str, Any] = wait_for(f"HeapSnapshot {namespace}/{name} to finish", finished, timeout)
    return result


def apply_snapshot(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    manifest = {
        "apiVersion": "heapsnap.dev/v1alpha1",
        "kind": "HeapSnapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def events_for(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Any]:
    """One moto server (authentication on) for the operator's tests: the sinks' own tests
    already run against both S3 implementations, so once is enough here."""
    from tests.support.s3server import running_moto

    with running_moto() as server:
        yield server


@dataclass
class S3Bucket:
    server: Any
    bucket: str

    @property
    def endpoint(self) -> str:
        return str(self.server.endpoint)

    @property
    def access_key(self) -> str:
        return str(self.server.access_key)

    @property
    def secret_key(self) -> str:
        return str(self.server.secret_key)

    @property
    def client(self) -> Any:
        return self.server.client()


@pytest.fixture
def s3(moto_s3: Any) -> S3Bucket:
    """A fresh bucket on the session's S3 server."""
    return S3Bucket(moto_s3, moto_s3.create_bucket())


@pytest.fixture
def credentials(cluster: Any, namespace: str, s3: S3Bucket) -> str:
    """The Secret ``s3-credentials`` with the session S3 server's keys, in the test's namespace."""
    cluster.kubectl(
        "create", "secret", "generic", "s3-credentials", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
    )  # fmt: skip
    return "s3-credentials"
