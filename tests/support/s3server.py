"""Real S3-compatible servers on loopback, started once per test session.

``s3_server`` is parametrized over two independent implementations: moto's server mode
(with authentication on: an IAM user is created first) and versitygw's posix backend
(built by dev/setup.d/25-s3.sh). Each yields an ``S3Server`` with the endpoint, a valid
access key and secret, and helpers to create buckets and to get a boto3 client.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

VERSITYGW_VERSION = "1.8.0"


@dataclass
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    reports_sse: bool
    process: subprocess.Popen[bytes]

    def client(self, *, secret_key: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (a fresh unique one when no name is given) and returns its name."""
        bucket = name or f"hs-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(
    port: int, process: subprocess.Popen[bytes], name: str, timeout: float = 60, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout} s")


def versitygw_binary() -> Path:
    cache = Path(os.environ.get("HEAPSNAP_CACHE", Path.home() / ".cache" / "heapsnap"))
    path = cache / "versitygw" / VERSITYGW_VERSION / "bin" / "versitygw"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run bash dev/setup.d/25-s3.sh")
    return path


def start_moto() -> S3Server:
    port = free_port()
    # Authentication is enforced after the first three actions, which create the user.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _wait_listening(port, process, "moto")
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        region_name="us-east-1",
    )
    iam.create_user(UserName="heapsnap")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="heapsnap", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="heapsnap")["AccessKey"]
    return S3Server("moto", endpoint, key["AccessKeyId"], key["SecretAccessKey"], True, process)


def start_versitygw(root: Path, host: str = "127.0.0.1") -> S3Server:
    """versitygw on ``host`` (the node IP for pods on the real node to reach it)."""
    port = free_port()
    access, secret = "HEAPSNAPTEST", "heapsnap-test-secret"
    process = subprocess.Popen(
        [
            str(versitygw_binary()),
            "--access",
            access,
            "--secret",
            secret,
            "-q",
            "--port",
            f"{host}:{port}",
            "posix",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(port, process, "versitygw", host=host)
    return S3Server("versitygw", f"http://{host}:{port}", access, secret, False, process)


def _stop(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextlib.contextmanager
def running_moto() -> Iterator[S3Server]:
    """A moto server (authentication on) for as long as the block runs."""
    server = start_moto()
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session", params=["moto", "versitygw"])
def s3_server(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """A running S3-compatible server: moto, then versitygw."""
    with tempfile.TemporaryDirectory(prefix="heapsnap-vgw-") as root:
        server = start_moto() if request.param == "moto" else start_versitygw(Path(root))
        try:
            yield server
        finally:
            _stop(server)
