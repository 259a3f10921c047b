"""kopf's connection comes from the operator's own API connection (controller.handlers.login):
in a pod that is the service account's in-cluster configuration."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import kopf
from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

from heapsnap.controller.handlers import login
from heapsnap.k8s.api import ApiConnection


def test_in_cluster_service_account_token_reaches_kopf(tmp_path: Path) -> None:
    # What the kubelet mounts into the pod, and the env it sets; the client writes the
    # token as "bearer <token>", in lower case (a pod on the real node made kopf anonymous).
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("the-service-account-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    cfg = client.Configuration()
    InClusterConfigLoader(
        token_filename=str(token),
        cert_filename=str(ca),
        environ={"KUBERNETES_SERVICE_HOST": "192.0.2.2", "KUBERNETES_SERVICE_PORT": "6443"},
    ).load_and_set(cfg)  # type: ignore[no-untyped-call]
    memo = kopf.Memo(cluster=SimpleNamespace(api=ApiConnection(cfg)))
    info = login(memo=memo)
    assert (info.scheme, info.token) == ("Bearer", "the-service-account-token")
    assert info.server == "https://192.0.2.2:6443" and info.ca_path == str(ca)
    assert info.username is None and info.password is None
