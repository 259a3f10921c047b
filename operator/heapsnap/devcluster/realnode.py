"""A real node beside kwok's: kubelet and containerd on this machine, pods in real containers.

containerd (Debian's 1.6, with runc and the CNI bridge and host-local plugins) runs with its
root, state and socket in the node's scratch folder; kubelet (built from the same go.mod as
the API server) registers with a node client certificate and serves exec, attach, logs and
port-forward with its own serving certificate. Pods get 10.244.0.0/24 on a bridge of their
own. Images come from :mod:`heapsnap.devcluster.images`, imported with ``ctr``: no registry.

What the node changes outside its folder (three sysctls kubelet sets, ``ip_forward`` the
bridge plugin sets, the bridge itself, ``/kubepods`` cgroups, files under /run and /var,
mounts, nft tables) is recorded first (:class:`MachineState`) and put back by ``stop``,
which returns what, if anything, still differs. One real node per machine: they would share
``/kubepods`` and ``/run/containerd``, so a lock file guards it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from heapsnap.devcluster.harness import (
    Cluster,
    ClusterError,
    _kubeconfig,
    _tail,
    bin_dir,
    kill_group,
    node_ip,
    spawn,
    wait_until,
)
from heapsnap.devcluster.images import PAUSE_IMAGE, Image, pause_image
from heapsnap.devcluster.pki import make_node_certs

REAL_NODE_NAME = "real-node-0"
BRIDGE = "heapsnap0"
POD_SUBNET = "10.244.0.0/24"
KUBELET_PORT = 10350
KUBELET_HEALTHZ_PORT = 10348
LOCK_FILE = Path("/run/heapsnap-realnode.lock")
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward")
# Folders outside the node's own where containerd, runc, CNI and kubelet leave files.
SHARED_DIRS = ("/run/containerd", "/run/netns", "/var/lib/cni", "/var/log/containers", "/var/log/pods")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTAINERD_NAMESPACE = "k8s.io"


def _sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def memory_cgroup(pid: int) -> Path:
    """The folder of ``pid``'s memory cgroup on this machine (cgroup v1, as here)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_ROOT / "memory" / path.lstrip("/")
    raise ClusterError(f"process {pid} has no memory cgroup (the real node expects cgroup v1)")


def _mounts() -> list[str]:
    """Mount points, in the order they were mounted."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        points.append(line.split()[4].replace("\\040", " "))
    return points


def _hierarchies() -> list[Path]:
    seen: set[Path] = set()
    out = []
    for entry in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        real = entry.resolve()
        if entry.is_dir() and real not in seen:
            seen.add(real)
            out.append(entry)
    return out


def _listing(folder: Path, depth: int = 3) -> list[str]:
    if not folder.exists():
        return []
    found = [str(folder)]
    if depth == 0 or folder.is_symlink() or not folder.is_dir():
        return found
    with contextlib.suppress(OSError):
        for child in sorted(folder.iterdir()):
            found += _listing(child, depth - 1)
    return found


def _nft_tables() -> list[str]:
    if not shutil.which("nft"):
        return []
    out = _sh("nft", "list", "tables", check=False).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def _take_lock(wait: float) -> IO[str]:
    """The machine's real-node lock, waiting up to ``wait`` seconds for its holder."""
    deadline = time.monotonic() + wait
    while True:
        lock = LOCK_FILE.open("a+")
        holder: str | None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = _lock_holder(lock)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "a process holds its lock"
        if holder is None:
            return lock
        lock.close()
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"another real node runs on this machine ({holder}): stop it first (`dev/cluster down`)"
            )
        time.sleep(2.0)


def _lock_holder(lock: IO[str]) -> str | None:
    """The folder of a real node that still runs although no process holds the lock (one a
    ``dev/cluster up`` left running), else None."""
    lock.seek(0)
    recorded = lock.read().strip()
    if not recorded:
        return None
    with contextlib.suppress(OSError, ValueError, KeyError):
        pids = json.loads((Path(recorded) / "state.json").read_text())["pids"]
        if any(Path(f"/proc/{int(pid)}").exists() for pid in pids.values()):
            return recorded
    return None


@dataclass
class MachineState:
    """What a real node may change on this machine, read before and after it runs."""

    sysctls: dict[str, str]
    mounts: list[str]
    links: list[str]
    cgroups: list[str]
    paths: list[str]
    nft_tables: list[str]

    @classmethod
    def read(cls) -> MachineState:
        links = json.loads(_sh("ip", "-j", "link", "show").stdout)
        return cls(
            sysctls={name: (Path("/proc/sys") / name).read_text().strip() for name in SYSCTLS},
            mounts=_mounts(),
            links=sorted(link["ifname"] for link in links),
            cgroups=sorted(str(child) for h in _hierarchies() for child in h.iterdir() if child.is_dir()),
            paths=[path for folder in SHARED_DIRS for path in _listing(Path(folder))],
            nft_tables=_nft_tables(),
        )

    def differences(self, now: MachineState) -> list[str]:
        """What ``now`` has that this state had not, or has changed: empty when the same."""
        out = []
        for name, value in self.sysctls.items():
            if now.sysctls.get(name) != value:
                out.append(f"sysctl {name}: {value} -> {now.sysctls.get(name)}")
        for label, before, after in (
            ("mount", self.mounts, now.mounts),
            ("link", self.links, now.links),
            ("cgroup", self.cgroups, now.cgroups),
            ("path", self.paths, now.paths),
            ("nft table", self.nft_tables, now.nft_tables),
        ):
            out += [f"new {label} {item}" for item in after if item not in set(before)]
            out += [f"missing {label} {item}" for item in before if item not in set(after)]
        return out


@dataclass
class RealNode:
    """kubelet + containerd registered in ``cluster`` as ``name``; pods with
    ``nodeName: <name>`` (or a nodeSelector, with the cluster's scheduler) run here."""

    cluster: Cluster
    workdir: Path
    name: str
    ip: str
    before: MachineState
    lock: IO[str]
    tie_to_parent: bool = True
    popens: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    # ---- lifecycle

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        workdir: Path,
        *,
        name: str = REAL_NODE_NAME,
        timeout: float = 120.0,
        tie_to_parent: bool = True,
        lock_wait: float = 0.0,
    ) -> RealNode:
        """Starts containerd and kubelet and waits for the node to be Ready. ``lock_wait``:
        seconds to wait for another real node on this machine to stop (0: refuse at once)."""
        if os.geteuid() != 0:
            raise ClusterError("the real node needs root (containerd, runc, cgroups, a bridge): run as root")
        for tool in ("containerd", "ctr", "runc"):
            if not shutil.which(tool):
                raise ClusterError(f"{tool} is missing: run `bash dev/setup.sh` (dev/setup.d/35-realnode.sh)")
        if not Path("/usr/lib/cni/bridge").exists():
            raise ClusterError(
                "the CNI plugins are missing: run `bash dev/setup.sh` (containernetworking-plugins)"
            )
        lock = _take_lock(lock_wait)
        workdir = workdir.resolve()
        lock.seek(0)
        lock.truncate()
        lock.write(f"{workdir}\n")
        lock.flush()
        workdir.mkdir(parents=True, exist_ok=True)
        before = MachineState.read()
        (workdir / "machine-before.json").write_text(json.dumps(asdict(before), indent=1))
        node = cls(cluster, workdir, name, node_ip(), before, lock, tie_to_parent)
        try:
            node._start(timeout)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = pause_image()
        self._start_containerd()
        wait_until(
            "containerd's socket",
            lambda: (
                self._running() and self.socket.exists() and self.ctr("version", check=False).returncode == 0
            ),
            deadline - time.monotonic(),
            logs=[self.log("containerd")],
        )
        self.import_image(pause)
        self._start_kubelet()
        wait_until(
            f"node {self.name} to be Ready",
            lambda: self._running() and self.cluster._is_ready(self.cluster._read("node", self.name)),
            deadline - time.monotonic(),
            logs=[self.log("kubelet"), self.log("containerd")],
            interval=0.3,
        )

    def _running(self) -> bool:
        for name, popen in self.popens.items():
            if popen.poll() is not None:
                raise ClusterError(f"{name} exited with code {popen.returncode}:\n{_tail(self.log(name))}")
        return True

    def _start_containerd(self) -> None:
        d = self.workdir
        (d / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        cni = {
            "cniVersion": "1.0.0",
            "name": "pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                }
            ],
        }
        (d / "cni" / "net.d" / "10-pods.conflist").write_text(json.dumps(cni, indent=1))
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{d / "containerd" / "root"}"
state = "{d / "containerd" / "state"}"
[grpc]
  address = "{self.socket}"
[debug]
  level = "warn"
{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below
  # its own (kubelet asks -998 for sandboxes), so containerd clamps it instead.
  restrict_oom_score_adj = true
  {cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    {cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  {cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / "cni" / "net.d"}"
"""
        (d / "containerd.toml").write_text(config)
        self._spawn("containerd", ["containerd", f"--config={d / 'containerd.toml'}"])

    def _start_kubelet(self) -> None:
        d, pki = self.workdir, self.cluster.pki
        certs = make_node_certs(pki, d / "pki", self.name, self.ip)
        kubeconfig = d / "kubelet.kubeconfig"
        kubeconfig.write_text(
            _kubeconfig(
                self.cluster.server,
                pki.ca_cert,
                {"client-certificate": str(certs.client_cert), "client-key": str(certs.client_key)},
                f"system:node:{self.name}",
            )
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            "failSwapOn": False,
            "address": self.ip,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "tlsCertFile": str(certs.serving_cert),
            "tlsPrivateKeyFile": str(certs.serving_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(d / "podlogs"),
            # The test images are imported, never pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            # true is fatal here: it insists on vm.overcommit_memory=1 and the panic sysctls.
            "protectKernelDefaults": False,
            # Otherwise kubelet adds KUBE-FIREWALL DROP rules to this machine's own firewall.
            "makeIPTablesUtilChains": False,
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
        }
        (d / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(bin_dir() / "kubelet"),
                f"--kubeconfig={kubeconfig}",
                f"--config={d / 'kubelet.yaml'}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                "--v=1",
            ],
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        popen = spawn(argv, self.log(name), cwd=self.workdir, tie_to_parent=self.tie_to_parent)
        self.popens[name] = popen
        self.pids[name] = popen.pid
        self._save_state()

    def _stop_process(self, name: str) -> None:
        popen, pid = self.popens.pop(name, None), self.pids.pop(name, None)
        if pid is not None:
            kill_group(pid, popen)
        self._save_state()

    def _save_state(self) -> None:
        state = {"name": self.name, "ip": self.ip, "pids": self.pids}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def attach(cls, cluster: Cluster, workdir: Path) -> RealNode:
        """The node a ``start(..., tie_to_parent=False)`` left running (``dev/cluster``)."""
        state = json.loads((workdir / "state.json").read_text())
        before = MachineState(**json.loads((workdir / "machine-before.json").read_text()))
        node = cls(cluster, workdir, state["name"], state["ip"], before, LOCK_FILE.open("a+"), False)
        node.pids = {k: int(v) for k, v in state["pids"].items()}
        return node

    def restart_kubelet(self) -> None:
        """Stops kubelet (SIGTERM) and starts it again; pods keep running meanwhile."""
        self._stop_process("kubelet")
        self._start_kubelet()

    def stop(self) -> list[str]:
        """Stops the node and puts the machine back as it was; returns what still differs."""
        try:
            self._stop_pods()
            self._stop_process("kubelet")
            self._remove_leftover_containers()
            self._stop_process("containerd")
            self._kill_strays()
            self._unmount()
            self._restore()
        finally:
            with contextlib.suppress(OSError):
                self.lock.seek(0)
                self.lock.truncate()
                self.lock.flush()
                fcntl.flock(self.lock, fcntl.LOCK_UN)
                self.lock.close()
        return self.before.differences(MachineState.read())

    def _stop_pods(self) -> None:
        """Deletes every pod bound to this node, and waits (briefly) until kubelet stopped
        their containers and tore down their networks."""
        if "kubelet" not in self.pids:
            return
        with contextlib.suppress(Exception):
            core = self.cluster._core()
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items
            for pod in pods:
                with contextlib.suppress(Exception):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                    )
        with contextlib.suppress(ClusterError):
            wait_until("the real node's containers to stop", self._no_tasks_running, 30)

    def _no_tasks_running(self) -> bool:
        out = self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
        return not any("RUNNING" in line for line in out)

    def _remove_leftover_containers(self) -> None:
        if "containerd" not in self.pids:
            return
        ids = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        for cid in ids:
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for cid in ids:
            self.ctr("tasks", "rm", "-f", cid, check=False)
            self.ctr("containers", "rm", cid, check=False)

    def _kill_strays(self) -> None:
        """Shims (they outlive containerd by design) and anything left in our cgroups."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
        for cgroup in self._new_cgroups():
            for procs in sorted(Path(cgroup).rglob("cgroup.procs")):
                with contextlib.suppress(OSError, ValueError):
                    for pid in procs.read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)

    def _new_cgroups(self) -> list[str]:
        existing = set(self.before.cgroups)
        return [
            str(child)
            for h in _hierarchies()
            for child in h.iterdir()
            if child.is_dir() and str(child) not in existing
        ]

    def _unmount(self) -> None:
        mine = (str(self.workdir), *SHARED_DIRS)
        before = set(self.before.mounts)
        for point in reversed(_mounts()):
            if point not in before and any(point == p or point.startswith(p + "/") for p in mine):
                _sh("umount", "-l", point, check=False)

    def _restore(self) -> None:
        if BRIDGE not in self.before.links:
            _sh("ip", "link", "delete", BRIDGE, check=False)
        for cgroup in self._new_cgroups():
            # Children first: a cgroup can be removed only when it has none.
            for path in sorted(Path(cgroup).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    with contextlib.suppress(OSError):
                        path.rmdir()
            with contextlib.suppress(OSError):
                Path(cgroup).rmdir()
        for table in _nft_tables():
            if table not in self.before.nft_tables:
                _sh("nft", "delete", *table.split()[1:], check=False)
        for name, value in self.before.sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / name).write_text(value)
        known = set(self.before.paths)
        for folder in SHARED_DIRS:
            for listed in sorted(_listing(Path(folder), depth=99), key=len, reverse=True):
                if listed in known:
                    continue
                entry = Path(listed)
                with contextlib.suppress(OSError):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()

    # ---- clients

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", f"--address={self.socket}", "-n", CONTAINERD_NAMESPACE, *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def import_image(self, image: Image) -> None:
        """Loads ``image`` into containerd (once), for pods with imagePullPolicy Never."""
        if image.digest in self.imported:
            return
        self.ctr("images", "import", str(image.archive))
        self.imported.add(image.digest)

    def container_id(self, namespace: str, pod: str, container: str) -> str:
        """containerd's id of a running container of a pod on this node."""
        obj = self.cluster._read("pod", pod, namespace)
        for status in (obj.status.container_statuses or []) if obj and obj.status else []:
            if status.name == container and status.container_id:
                return str(status.container_id).split("://", 1)[-1]
        raise ClusterError(f"container {container} of pod {namespace}/{pod} has no id yet")

    def kill_container(self, namespace: str, pod: str, container: str, sig: str = "SIGKILL") -> None:
        """Sends ``sig`` to a container's main process through containerd, as ``crictl`` or
        the kernel's OOM killer would end it: no grace period, no preStop."""
        self.ctr("tasks", "kill", "-s", sig, self.container_id(namespace, pod, container))

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        """The host pid of a container's main process."""
        out = self.ctr("tasks", "ls").stdout.splitlines()[1:]
        cid = self.container_id(namespace, pod, container)
        for line in out:
            parts = line.split()
            if parts and parts[0] == cid:
                return int(parts[1])
        raise ClusterError(f"no task for container {cid}")

    def summary(self) -> Any:
        """The kubelet's stats summary, through the API server's node proxy."""
        raw = self.cluster.kubectl("get", "--raw", f"/api/v1/nodes/{self.name}/proxy/stats/summary").stdout
        return json.loads(raw)
