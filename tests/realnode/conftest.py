"""Fixtures of the real-node tests: a control plane with kube-scheduler, the real node
(kubelet + containerd) beside kwok's, the images imported, versitygw on the node IP, and
the operator installed by `helm install` of the chart, running as a pod from its image.

Everything here is started once for the package; each test gets Node.js targets in real
containers (:meth:`RealWorld.target`) and, afterwards, the check that nothing is left in
them or in the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from heapsnap.devcluster import images
from heapsnap.devcluster.harness import Cluster, ClusterError, missing_binaries, wait_until
from heapsnap.devcluster.realnode import RealNode, memory_cgroup
from tests.chart._helm import CHART, Helm
from tests.operator.conftest import apply_snapshot, events_for, get_snapshot
from tests.operator.test_e2e import kubectl_heapsnap, s3_spec
from tests.support.s3server import S3Server, _stop, start_versitygw

WATCHED = "hs-apps"
UNWATCHED = "hs-other"
OPERATOR_NAMESPACE = "heapsnap-system"
RELEASE = "heapsnap"
BUCKET = "snaps"
CREDENTIALS = "s3-credentials"


@dataclass
class Target:
    """A pod on the real node whose container ``app`` runs ``node /app/main.js``."""

    world: RealWorld
    namespace: str
    name: str
    container: str = "app"

    def pod(self) -> dict[str, Any]:
        out = self.world.cluster.kubectl("get", "pod", self.name, "-n", self.namespace, "-o", "json").stdout
        return dict(json.loads(out))

    def pid(self) -> int:
        """The host pid of the container's main process (node, pid 1 inside)."""
        return self.world.node.container_pid(self.namespace, self.name, self.container)

    def restarts(self) -> int:
        statuses = self.pod()["status"].get("containerStatuses") or []
        return sum(int(s.get("restartCount", 0)) for s in statuses if s["name"] == self.container)

    def leftovers(self) -> list[str]:
        """What a capture may have left in the container, seen from the host: listening
        sockets, snapshot files, processes beside node."""
        pid = self.pid()
        found = []
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":  # LISTEN
                    found.append(f"listening {table} {parts[1]}")
        root = Path(f"/proc/{pid}/root")
        for folder in ("tmp", "home/nonroot", "app", "data"):
            base = root / folder
            if base.is_dir():
                found += [f"file {p.relative_to(root)}" for p in base.rglob("*.heapsnapshot*")]
        procs = (memory_cgroup(pid) / "cgroup.procs").read_text().split()
        found += [f"process {p}: {_cmdline(int(p))}" for p in procs if int(p) != pid]
        return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


@dataclass
class RealWorld:
    cluster: Cluster
    node: RealNode
    s3: S3Server
    targets: list[Target] = field(default_factory=list)

    # ---- targets

    def target(
        self,
        name: str,
        script: str,
        *,
        image: str = "distroless",
        major: str = "20",
        namespace: str = WATCHED,
        env: dict[str, str] | None = None,
        memory: str | None = None,
        ephemeral_storage: str | None = None,
        read_only: bool = False,
        run_as_user: int | None = None,
        tmp_volume: bool = False,
        labels: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Target:
        """A Node.js pod on the real node running ``script`` from a ConfigMap at /app."""
        built = images.node_image(image, major)
        self.node.import_image(built)
        node = "/nodejs/bin/node" if image == "distroless" else "node"
        self.cluster.kubectl(
            "create", "configmap", f"{name}-app", "-n", namespace, "--from-literal", f"main.js={script}"
        )
        container: dict[str, Any] = {
            "name": "app",
            "image": built.name,
            "imagePullPolicy": "Never",
            "command": [node, "/app/main.js"],
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
            "volumeMounts": [{"name": "app", "mountPath": "/app", "readOnly": True}],
        }
        limits = {k: v for k, v in (("memory", memory), ("ephemeral-storage", ephemeral_storage)) if v}
        if limits:
            container["resources"] = {"limits": limits, "requests": limits}
        security: dict[str, Any] = {"allowPrivilegeEscalation": False}
        if read_only:
            security["readOnlyRootFilesystem"] = True
        if run_as_user is not None:
            security |= {
                "runAsUser": run_as_user,
                "runAsGroup": run_as_user,
                "runAsNonRoot": run_as_user != 0,
            }
        container["securityContext"] = security
        volumes: list[dict[str, Any]] = [{"name": "app", "configMap": {"name": f"{name}-app"}}]
        if tmp_volume:
            volumes.append({"name": "tmp", "emptyDir": {}})
            container["volumeMounts"].append({"name": "tmp", "mountPath": "/tmp"})
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": {
                "nodeName": self.node.name,
                "containers": [container],
                "volumes": volumes,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 2,
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        target = Target(self, namespace, name)
        self.targets.append(target)
        if wait:
            self.cluster.kubectl(
                "wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=60s"
            )
        return target

    def remove_targets(self) -> None:
        for target in self.targets:
            self.cluster.kubectl(
                "delete", "pod,configmap", f"{target.name}", f"{target.name}-app", "-n", target.namespace,
                "--ignore-not-found", "--grace-period=0", "--force", check=False,
            )  # fmt: skip
        self.targets.clear()

    # ---- the operator

    def operator_pod(self, timeout: float = 90) -> dict[str, Any]:
        """The Ready operator pod (after a restart, the Deployment's new one)."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            out = self.cluster.kubectl(
                "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=heapsnap", "-o", "json"
            ).stdout
            for pod in json.loads(out)["items"]:
                conditions = pod["status"].get("conditions") or []
                if pod["metadata"].get("deletionTimestamp") is None and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in conditions
                ):
                    found.append(pod)
                    return True
            return False

        wait_until(
            "the operator pod to be Ready", ready, timeout, logs=[self.node.log("kubelet")], interval=0.5
        )
        return found[0]

    def operator_logs(self) -> str:
        return self.cluster.kubectl(
            "logs",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=heapsnap",
            "--tail=200",
            check=False,
        ).stdout

    # ---- HeapSnapshots

    def snapshot_spec(self, pod: str, **extra: Any) -> dict[str, Any]:
        storage = {"s3": s3_spec(self.s3, BUCKET)}
        return {"target": {"podName": pod}, "storage": storage, "timeoutSeconds": 180, **extra}

    def apply(self, name: str, spec: dict[str, Any], namespace: str = WATCHED) -> None:
        apply_snapshot(self.cluster, namespace, name, spec)

    def get(self, name: str, namespace: str = WATCHED) -> dict[str, Any]:
        return get_snapshot(self.cluster, namespace, name)

    def wait_phase(
        self, name: str, phases: tuple[str, ...] = ("Succeeded", "Failed"), timeout: float = 240,
        namespace: str = WATCHED,
    ) -> dict[str, Any]:  # fmt: skip
        """The HeapSnapshot once its status.phase is one of ``phases``."""
        return self.wait_status(
            name, lambda s: s.get("phase") in phases, f"phase in {phases}", timeout, namespace
        )

    def under_way(self, name: str, steps: tuple[str, ...] = ("generating", "transferring")) -> dict[str, Any]:
        """The HeapSnapshot once its capture is at one of ``steps`` (the target paused or
        streaming), with the inspector open."""
        return self.wait_status(
            name,
            lambda s: s.get("step") in steps and bool((s.get("target") or {}).get("inspectorPort")),
            f"step in {steps}",
            120,
        )

    def wait_status(
        self, name: str, check: Any, what: str, timeout: float, namespace: str = WATCHED
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def reached() -> bool:
            obj = self.get(name, namespace)
            if check(obj.get("status") or {}):
                found.append(obj)
                return True
            return False

        try:
            wait_until(f"HeapSnapshot {namespace}/{name}: {what}", reached, timeout, interval=0.2)
        except ClusterError as exc:
            last = self.get(name, namespace).get("status") or {}
            raise AssertionError(f"{exc}\nstatus: {last}\noperator logs:\n{self.operator_logs()}") from exc
        return found[0]

    def events(self, name: str, namespace: str = WATCHED) -> list[str]:
        return [e["reason"] for e in events_for(self.cluster, namespace, name)]

    def stored(self, obj: dict[str, Any]) -> bytes:
        uri = obj["status"]["artifact"]["uri"]
        bucket, key = uri[len("s3://") :].split("/", 1)
        return bytes(self.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def objects(self) -> list[str]:
        listed = self.s3.client().list_objects_v2(Bucket=BUCKET)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def uploads(self) -> list[str]:
        listed = self.s3.client().list_multipart_uploads(Bucket=BUCKET)
        return [u["Key"] for u in listed.get("Uploads", [])]

    def kubectl_heapsnap(self, *args: str, namespace: str = WATCHED) -> subprocess.CompletedProcess[str]:
        return kubectl_heapsnap(self.cluster, namespace, *args)

    def operator_pid(self) -> int:
        """The host pid of the operator pod's container."""
        name = self.operator_pod()["metadata"]["name"]
        return self.node.container_pid(OPERATOR_NAMESPACE, name, "operator")


def operator_values(cluster: Cluster, node: RealNode) -> dict[str, Any]:
    """The chart values of the real-node install. The pod reaches the API server at the
    node IP: no kube-proxy runs, so the `kubernetes` Service's ClusterIP (the in-cluster
    default) leads nowhere; the client otherwise configures itself in-cluster as usual
    (the service account's token and CA from the projected volume)."""
    port = cluster.server.rsplit(":", 1)[1]
    return {
        "image": {"repository": images.OPERATOR_REPOSITORY, "pullPolicy": "Never"},
        "watchNamespaces": [WATCHED],
        "nodeSelector": {"kubernetes.io/hostname": node.name},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": node.ip},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ],
    }


@contextlib.contextmanager
def real_world(workdir: Path) -> Iterator[RealWorld]:
    """Everything of the real-node tests, from nothing, and back to nothing: the machine
    checked as it was (``RealNode.stop``) on the way out."""
    workdir.chmod(0o755)
    cluster = Cluster.start(workdir / "cluster", scheduler=True)
    node: RealNode | None = None
    world: RealWorld | None = None
    s3: S3Server | None = None
    differences: list[str] = []
    try:
        # Another checkout's tests on this machine may hold the node: wait for them.
        node = RealNode.start(cluster, workdir / "node", lock_wait=1800)
        node.import_image(images.operator_image())
        s3_root = workdir / "s3"
        s3_root.mkdir()
        s3 = start_versitygw(s3_root, host=node.ip)
        s3.create_bucket(BUCKET)
        for namespace in (WATCHED, UNWATCHED):
            cluster.create_namespace(namespace)
            cluster.kubectl(
                "create", "secret", "generic", CREDENTIALS, "-n", namespace,
                f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
            )  # fmt: skip
        values = workdir / "values.yaml"
        values.write_text(yaml.safe_dump(operator_values(cluster, node)))
        started = time.monotonic()
        Helm(workdir / "helm", cluster.kubeconfig).run(
            "install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE,
            "--create-namespace", "-f", str(values), "--wait", "--timeout=110s",
        )  # fmt: skip
        world = RealWorld(cluster, node, s3)
        world.operator_pod()
        print(f"\nthe operator's release ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield world
    finally:
        node = world.node if world is not None else node  # test_machine starts a new one
        if node is not None:
            differences = node.stop()
        if s3 is not None:
            _stop(s3)
        cluster.stop()
    assert differences == [], f"the real node left the machine changed: {differences}"


@pytest.fixture(scope="package")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealWorld]:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"binaries missing ({', '.join(missing)}): run `bash dev/setup.sh`", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (containerd, runc, cgroups)", pytrace=False)
    with real_world(tmp_path_factory.mktemp("realnode")) as world:
        yield world


@pytest.fixture
def world(real: RealWorld) -> Iterator[RealWorld]:
    """The package's real world, checked clean after the test: nothing left in the targets
    that still run, no multipart upload in the bucket."""
    real.operator_pod()
    yield real
    try:
        leftovers = {}
        for target in real.targets:
            try:
                phase = target.pod()["status"].get("phase")
            except subprocess.CalledProcessError:
                continue
            if phase == "Running":
                try:
                    with_left = target.leftovers()
                except ClusterError:  # its container is restarting: nothing of it is left
                    continue
                if with_left:
                    leftovers[target.name] = with_left
        assert leftovers == {}, f"a capture left things in its target: {leftovers}"
        assert real.uploads() == [], "a multipart upload was left open"
    finally:
        real.remove_targets()
