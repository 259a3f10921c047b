"""A real Kubernetes control plane on loopback, for tests and local trials.

etcd, kube-apiserver (RBAC, service-account tokens), kube-controller-manager and kwok
as the fake kubelet run as local processes on random free ports. kwok's kubelet server
runs ``exec`` on this machine (ClusterExec, local) and forwards every pod port P to
127.0.0.1:P (one identity ClusterPortForward rule per port), so a pod backed by a local
Node.js process behaves like a real one for exec and port-forward through the API server.

Binaries come from ``dev/k8s/build.sh`` (``dev/setup.sh`` runs it). Every process
runs in its own process group; ``Cluster.stop()`` kills them all.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from heapsnap.devcluster.pki import Pki, make_pki

HERE = Path(__file__).resolve().parent
BINARIES = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet",
    "kwok", "helm",
)  # fmt: skip
NODE_NAME = "kwok-node-0"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Pod ports kwok forwards, each to the same port on 127.0.0.1: Node's default inspector
# port and a range below the kernel's ephemeral ports (32768+), from which the harness
# gives each Node process its own --inspect-port.
FORWARDED_PORTS: tuple[int, ...] = (9229, *range(19000, 20000))
_PR_SET_PDEATHSIG = 1
_INSPECTOR_LINE = re.compile(rb"Debugger listening on ws://[^:/]+:(\d+)/")


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or used."""


# --- binaries -------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """The assignments of versions.sh, the single source of the binaries' versions."""
    values: dict[str, str] = {}
    for line in (HERE / "versions.sh").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        values[key] = string.Template(raw.strip('"')).substitute(values)
    return values


def cache_dir() -> Path:
    return Path(os.environ.get("HEAPSNAP_CACHE") or Path.home() / ".cache" / "heapsnap")


def bin_dir() -> Path:
    return cache_dir() / "cluster" / versions()["CLUSTER_VERSIONS_KEY"] / "bin"


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not os.access(bin_dir() / name, os.X_OK)]


def require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        raise ClusterError(
            f"control-plane binaries {', '.join(missing)} are missing from {bin_dir()}: "
            "run `bash dev/setup.sh` (or `bash dev/k8s/build.sh`) to build them"
        )


# --- processes ------------------------------------------------------------------------


def node_ip() -> str:
    """This machine's address on the interface of its default route (eth0's here): the
    real node's InternalIP, where pods reach the API server and the test S3 servers."""
    try:

        def ip(*args: str) -> Any:
            return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True,
                                             check=True, timeout=10).stdout)  # fmt: skip

        device = ip("route", "show", "default")[0]["dev"]
        addrs = ip("-4", "addr", "show", "dev", device)
        return str(addrs[0]["addr_info"][0]["local"])
    except (OSError, subprocess.SubprocessError, ValueError, LookupError) as exc:
        raise ClusterError(f"no IPv4 address on a default route for the real node: {exc}") from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    # Runs in the child: if pytest itself is killed, the kernel kills this process too.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tie_to_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Starts a process in its own process group, stdout and stderr into ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            # The death signal follows the forking *thread*: only tie to the main thread.
            preexec_fn=_die_with_parent
            if tie_to_parent and threading.current_thread() is threading.main_thread()
            else None,
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def kill_group(pid: int, popen: subprocess.Popen[bytes] | None = None, *, grace: float = 3.0) -> None:
    """SIGTERM to the process group led by ``pid``, SIGKILL after ``grace`` seconds."""

    def gone() -> bool:
        return popen.poll() is not None if popen is not None else not _pid_alive(pid)

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        if gone():
            break
    # Children the leader left behind in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, *, logs: Iterable[Path] = (), interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    details = "".join(f"\n--- {log.name} ---\n{_tail(log)}" for log in logs)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{details}")


# --- kwok configuration ---------------------------------------------------------------


def kwok_config(ports: Iterable[int] = FORWARDED_PORTS) -> str:
    """kwok's --config: stages, local exec for every pod, identity port-forward rules."""
    stages = (HERE / "kwok" / "stages.yaml").read_text()
    cluster_exec = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterExec",
        "metadata": {"name": "local"},
        "spec": {"execs": [{"local": {}}]},
    }
    # A forward's target needs a fixed port, so identity P -> 127.0.0.1:P takes one rule
    # per port; all 65,535 made kwok take 8 s to start, hence a reserved range.
    forwards = [{"ports": [port], "target": {"address": "127.0.0.1", "port": port}} for port in ports]
    port_forward = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterPortForward",
        "metadata": {"name": "identity"},
        "spec": {"forwards": forwards},
    }
    return f"{stages}\n---\n{yaml.safe_dump(cluster_exec)}---\n{json.dumps(port_forward)}\n"


def _kubeconfig(server: str, ca: Path, user: dict[str, Any], name: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "heapsnap-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": "heapsnap-test", "user": name}}],
        "current-context": name,
    }
    return yaml.safe_dump(doc)


# --- node processes behind pods -------------------------------------------------------


def node_binary(version: str) -> Path:
    """``node`` on PATH for its major version, else $HEAPSNAP_CACHE/node/<version>*/bin/node."""
    on_path = shutil.which("node")
    if on_path:
        found = subprocess.run([on_path, "--version"], capture_output=True, text=True, check=True).stdout
        if found.strip().lstrip("v").startswith(f"{version}."):
            return Path(on_path)
    root = cache_dir() / "node"
    candidates = sorted(root.glob(f"{version}*/bin/node")) if root.is_dir() else []
    for candidate in candidates:
        name = candidate.parent.parent.name
        if name == version or name.startswith(f"{version}."):
            return candidate
    raise ClusterError(
        f"Node.js {version} is not installed: run `bash dev/setup.sh` (dev/setup.d/20-node.sh)"
    )


@dataclass
class NodePod:
    """A pod bound to the kwok node whose main container is a real local Node.js process."""

    cluster: Cluster
    namespace: str
    name: str
    container: str
    popen: subprocess.Popen[bytes]
    log: Path
    node: Path
    inspect_port: int | None
    """The port given with --inspect-port (None when node_args had their own)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> bytes:
        """What the process wrote to stdout and stderr so far."""
        return self.log.read_bytes() if self.log.exists() else b""

    def inspector_port(self, timeout: float = 10.0) -> int:
        """The port the inspector announced on stderr (after --inspect or SIGUSR1)."""
        found: list[int] = []

        def announced() -> bool:
            match = _INSPECTOR_LINE.search(self.output())
            if match:
                found.append(int(match.group(1)))
            return bool(found)

        wait_until(f"the inspector of pid {self.pid}", announced, timeout, logs=[self.log])
        return found[0]

    def stop(self) -> None:
        """Kills the process and force-deletes the pod; safe to call twice."""
        kill_group(self.popen.pid, self.popen, grace=1.0)
        self.cluster.delete_pod(self.namespace, self.name)
        self.cluster._given_ports.discard(self.inspect_port or 0)


# --- the cluster ----------------------------------------------------------------------


@dataclass
class Cluster:
    workdir: Path
    server: str
    kubeconfig: Path
    pki: Pki
    pids: dict[str, int]
    popens: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_name: str = NODE_NAME
    _core_api: Any = field(default=None, repr=False)
    _given_ports: set[int] = field(default_factory=set, repr=False)

    # ---- lifecycle

    @classmethod
    def start(
        cls, workdir: Path, *, tie_to_parent: bool = True, timeout: float = 90.0, scheduler: bool = False
    ) -> Cluster:
        """Starts etcd, kube-apiserver, kube-controller-manager and kwok; waits for a Ready node.
        ``scheduler`` adds kube-scheduler (for workloads such as the chart's Deployment on
        the real node); without it, only pods with a nodeName run.

        The API server listens on every address, and its certificate names this machine's
        node IP too: pods on the real node reach it there (no kube-proxy runs, so the
        ``kubernetes`` Service's ClusterIP leads nowhere)."""
        require_binaries()
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        pki = make_pki(workdir / "pki", extra_ips=(node_ip(),))
        etcd_port, peer_port, api_port, kwok_port = (free_port() for _ in range(4))
        server = f"https://127.0.0.1:{api_port}"
        kubeconfig = workdir / "admin.kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(
                server,
                pki.ca_cert,
                {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)},
                "admin",
            )
        )
        kubeconfig.chmod(0o600)
        cluster = cls(workdir=workdir, server=server, kubeconfig=kubeconfig, pki=pki, pids={})
        try:
            cluster._start_processes(
                etcd_port, peer_port, api_port, kwok_port, tie_to_parent, timeout, scheduler
            )
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _running(self) -> bool:
        """True while every started component runs; raises with its log when one exited."""
        for name, popen in self.popens.items():
            if popen.poll() is not None:
                raise ClusterError(f"{name} exited with code {popen.returncode}:\n{_tail(self.log(name))}")
        return True

    def _run(self, name: str, argv: list[str], tie_to_parent: bool) -> None:
        popen = spawn(argv, self.log(name), tie_to_parent=tie_to_parent, cwd=self.workdir)
        self.popens[name] = popen
        self.pids[name] = popen.pid
        self._save_state()

    def _start_processes(
        self,
        etcd_port: int,
        peer_port: int,
        api_port: int,
        kwok_port: int,
        tie: bool,
        timeout: float,
        scheduler: bool,
    ) -> None:
        pki, b = self.pki, bin_dir()
        deadline = time.monotonic() + timeout
        peer = f"http://127.0.0.1:{peer_port}"
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._run(
            "etcd",
            [
                str(b / "etcd"),
                "--name=node0",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=node0={peer}",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=2147483648",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            tie,
        )
        self._run(
            "kube-apiserver",
            [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--etcd-prefix=/registry",
                "--bind-address=0.0.0.0",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                # The loopback advertise address is not a valid Endpoints IP.
                "--endpoint-reconciler-type=none",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
            ],
            tie,
        )
        wait_until(
            "kube-apiserver /readyz",
            lambda: self._running() and self._ready(),
            deadline - time.monotonic(),
            logs=[self.log("etcd"), self.log("kube-apiserver")],
        )
        self._run(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",
                "--leader-elect=false",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                "--controllers=*",
            ],
            tie,
        )
        if scheduler:
            self._run(
                "kube-scheduler",
                [
                    str(b / "kube-scheduler"),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--secure-port=0",
                    "--leader-elect=false",
                ],
                tie,
            )
        config = self.workdir / "kwok.yaml"
        config.write_text(kwok_config())
        self._run(
            "kwok",
            [
                str(b / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                # Only its own fake nodes: a real kubelet's node is the kubelet's.
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--node-ip=127.0.0.1",
                f"--node-port={kwok_port}",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                "--node-lease-duration-seconds=40",
            ],
            tie,
        )
        self._create_node()
        wait_until(
            f"node {self.node_name} to be Ready",
            lambda: self._running() and self._node_ready(),
            deadline - time.monotonic(),
            logs=[self.log("kwok")],
            interval=0.2,
        )
        wait_until(
            "the default service account (kube-controller-manager)",
            lambda: self._running() and self._exists("service_account", "default", "default"),
            deadline - time.monotonic(),
            logs=[self.log("kube-controller-manager")],
            interval=0.2,
        )

    def stop(self) -> None:
        """Kills every process of the cluster (also those of an attached cluster)."""
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            popen = self.popens.get(name)
            if popen is None and not self._owns(pid, name):
                continue
            kill_group(pid, popen)
        self.pids.clear()
        self.popens.clear()
        self._save_state()
        if self._core_api is not None:
            self._core_api.api_client.close()
            self._core_api = None

    def _owns(self, pid: int, name: str) -> bool:
        # A pid from a state file may have been reused by an unrelated process.
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            return False
        return argv0 == str(bin_dir() / name)

    def alive(self) -> bool:
        return bool(self.pids) and all(self._owns(pid, name) for name, pid in self.pids.items())

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # ---- state file, for dev/cluster

    def _save_state(self) -> None:
        state = {"server": self.server, "kubeconfig": str(self.kubeconfig), "pids": self.pids}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, workdir: Path) -> Cluster:
        """The cluster whose state a previous ``start`` wrote into ``workdir``."""
        workdir = workdir.resolve()
        try:
            state = json.loads((workdir / "state.json").read_text())
        except FileNotFoundError as exc:
            raise ClusterError(f"no cluster state in {workdir}: start one with `dev/cluster up`") from exc
        pki_dir = workdir / "pki"
        pki = Pki(
            ca_cert=pki_dir / "ca.crt",
            ca_key=pki_dir / "ca.key",
            serving_cert=pki_dir / "serving.crt",
            serving_key=pki_dir / "serving.key",
            admin_cert=pki_dir / "admin.crt",
            admin_key=pki_dir / "admin.key",
            sa_key=pki_dir / "sa.key",
            sa_pub=pki_dir / "sa.pub",
        )
        return cls(
            workdir=workdir,
            server=state["server"],
            kubeconfig=Path(state["kubeconfig"]),
            pki=pki,
            pids={k: int(v) for k, v in state["pids"].items()},
        )

    # ---- clients

    def bin(self, name: str) -> Path:
        path = bin_dir() / name
        if not os.access(path, os.X_OK):
            raise ClusterError(f"{name} is missing from {bin_dir()}: run `bash dev/setup.sh`")
        return path

    def ssl_context(self) -> ssl.SSLContext:
        """TLS context for raw clients: trusts the CA, presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin("kubectl")), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def api_client(self, *, impersonate: str | None = None, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` as admin, or as ``impersonate`` (a user name or
        ``system:serviceaccount:NS:NAME``; the API server adds a service account's groups)."""
        from kubernetes import config

        client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.kubeconfig)
        )
        if impersonate:
            client.set_default_header("Impersonate-User", impersonate)
        return client

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", context=self.ssl_context(), timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _core(self) -> Any:
        from kubernetes import client

        if self._core_api is None:
            self._core_api = client.CoreV1Api(self.api_client())
        return self._core_api

    def _read(self, kind: str, name: str, namespace: str | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException

        core = self._core()
        try:
            if namespace is None:
                return getattr(core, f"read_{kind}")(name)
            return getattr(core, f"read_namespaced_{kind}")(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        return self._read(kind, name, namespace) is not None

    @staticmethod
    def _is_ready(obj: Any) -> bool:
        conditions = (obj.status.conditions or []) if obj is not None and obj.status else []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def _create_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {"kubernetes.io/hostname": self.node_name, "type": "kwok"},
                "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            },
        }
        self._core().create_node(node)

    def _node_ready(self) -> bool:
        return self._is_ready(self._read("node", self.node_name))

    def create_namespace(self, name: str) -> str:
        """Creates a namespace and waits for its default service account (pods need it)."""
        self._core().create_namespace({"metadata": {"name": name}})
        wait_until(
            f"the default service account in {name}",
            lambda: self._exists("service_account", "default", name),
            30,
            logs=[self.log("kube-controller-manager")],
        )
        return name

    def delete_pod(self, namespace: str, name: str) -> None:
        """Force-deletes a pod (grace period 0); a missing pod is fine."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._core().delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")

    def kubeconfig_for_service_account(self, namespace: str, name: str, *, expiration: int = 3600) -> Path:
        """A kubeconfig with a bound token (TokenRequest) of an existing service account."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={expiration}s"
        ).stdout.strip()
        path = self.workdir / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_kubeconfig(self.server, self.pki.ca_cert, {"token": token}, f"{namespace}-{name}"))
        path.chmod(0o600)
        return path

    # ---- pods backed by Node.js processes

    def pod_port(self) -> int:
        """A free port that kwok forwards (pod port P -> 127.0.0.1:P), not given out before."""
        candidates = [p for p in FORWARDED_PORTS[1:] if p not in self._given_ports]
        random.shuffle(candidates)
        for port in candidates:
            if _port_free(port):
                self._given_ports.add(port)
                return port
        raise ClusterError(f"no free port left in {FORWARDED_PORTS[1]}-{FORWARDED_PORTS[-1]}")

    def start_node_pod(
        self,
        namespace: str,
        name: str,
        *,
        script: str,
        node_version: str = "20",
        node_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        container: str = "app",
        extra_containers: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        ports: Sequence[int] = (9229,),
        ready_timeout: float = 30.0,
    ) -> NodePod:
        """Starts ``node [node_args] main.js`` (``script`` is main.js's source) and a pod
        bound to the kwok node; returns once the pod is Ready.

        Unless ``node_args`` has its own ``--inspect-port``, the process gets
        ``--inspect-port=127.0.0.1:P`` with P from ``pod_port()`` (``NodePod.inspect_port``):
        all processes share this machine's network, so SIGUSR1 must not make them all race
        for 9229, and kwok only forwards ``FORWARDED_PORTS``. It also overrides the port of
        ``--inspect=127.0.0.1:0``.
        """
        node = node_binary(node_version)
        appdir = self.workdir / "pods" / namespace / name
        appdir.mkdir(parents=True, exist_ok=True)
        main = appdir / "main.js"
        main.write_text(script)
        args = list(node_args)
        inspect_port: int | None = None
        if not any(arg.startswith("--inspect-port") for arg in args):
            inspect_port = self.pod_port()
            args.append(f"--inspect-port=127.0.0.1:{inspect_port}")
        log = appdir / "output.log"
        log.unlink(missing_ok=True)
        popen = spawn([str(node), *args, str(main)], log, env={**os.environ, **(env or {})}, cwd=appdir)
        pod = NodePod(self, namespace, name, container, popen, log, node, inspect_port)
        try:
            self._create_pod(pod, node_version, args, extra_containers, labels or {}, ports)
            wait_until(
                f"pod {namespace}/{name} to be Ready",
                lambda: self._pod_ready(namespace, name),
                ready_timeout,
                logs=[self.log("kwok"), log],
            )
        except BaseException:
            pod.stop()
            raise
        return pod

    def _create_pod(
        self,
        pod: NodePod,
        node_version: str,
        args: list[str],
        extra_containers: Sequence[str],
        labels: Mapping[str, str],
        ports: Sequence[int],
    ) -> None:
        main = {
            "name": pod.container,
            "image": f"node:{node_version}",
            "command": ["node", *args, "main.js"],
            "ports": [{"containerPort": port, "protocol": "TCP"} for port in ports],
        }
        sidecars = [{"name": extra, "image": "busybox:stable"} for extra in extra_containers]
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": dict(labels),
                "annotations": {"heapsnap.test/pid": str(pod.pid)},
            },
            "spec": {
                "nodeName": self.node_name,
                "containers": [main, *sidecars],
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
            },
        }
        self._core().create_namespaced_pod(pod.namespace, manifest)

    def _pod_ready(self, namespace: str, name: str) -> bool:
        return self._is_ready(self._read("pod", name, namespace))
