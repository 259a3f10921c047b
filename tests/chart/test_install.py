"""The chart on the real API server: server-side dry-run of what it renders, `helm install`,
and what the chart's ServiceAccount may and may not do, asked of the API server's own
authorizer (SubjectAccessReview, as `kubectl auth can-i` does) and tried for real with the
ServiceAccount's token."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from heapsnap.devcluster.harness import Cluster, free_port, wait_until
from tests.chart._contract import SECRET_GRANTS, WATCH_GRANTS, lease_grants
from tests.chart._helm import CHART, Grant, Helm
from tests.chart.conftest import ImageVenv
from tests.operator.conftest import apply_snapshot, get_snapshot
from tests.support.nodeproc import LEAKY_APP
from tests.support.s3server import S3Server, running_moto

pytestmark = [
    pytest.mark.cluster,
    # The kubernetes client leaves some TLS sockets to the garbage collector (its websocket
    # streams and pooled connections); that is the client's, not a leak of the chart's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

_ids = itertools.count(1)
RESOURCES = [
    ("heapsnap.dev", "heapsnapshots"),
    ("heapsnap.dev", "heapsnapshots/status"),
    ("heapsnap.dev", "heapsnapshots/finalizers"),
    ("heapsnap.dev", "heapsnapshotpolicies"),
    ("heapsnap.dev", "heapsnapshotpolicies/status"),
    ("metrics.k8s.io", "pods"),
    ("", "nodes/proxy"),
    ("", "pods"),
    ("", "pods/exec"),
    ("", "pods/portforward"),
    ("", "pods/log"),
    ("", "events"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "serviceaccounts/token"),
    ("apps", "deployments"),
    ("coordination.k8s.io", "leases"),
]
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]


_open_clients: list[Any] = []


def closing(api_client: Any) -> Any:
    """Remembers ``api_client`` so that the module's teardown closes its connection pool
    (an unclosed one is a ResourceWarning, an error under filterwarnings=error)."""
    _open_clients.append(api_client)
    return api_client


@pytest.fixture(autouse=True, scope="module")
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


@dataclass(frozen=True)
class Installed:
    helm: Helm
    release: str
    namespace: str  # the release's, where the operator runs
    watched: str
    other: str  # a namespace the operator does not watch
    notes: str

    @property
    def service_account(self) -> str:
        return f"{self.release}-heapsnap"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm-home"), kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="module")
def installed(cluster: Cluster, helm: Helm) -> Iterator[Installed]:
    """The chart installed in namespaced mode: the operator in its own namespace, watching
    one other namespace; a third namespace stands for the rest of the cluster."""
    n = next(_ids)
    release, ns, watched, other = f"hsi{n}", f"hs-system-{n}", f"hs-apps-{n}", f"hs-other-{n}"
    for name in (ns, watched, other):
        cluster.create_namespace(name)
    try:
        result = helm.run(
            "install", release, str(CHART), f"--namespace={ns}", f"--set=watchNamespaces={{{watched}}}"
        )
        yield Installed(helm, release, ns, watched, other, result.stdout)
        helm.run("uninstall", release, f"--namespace={ns}")
    finally:
        for name in (ns, watched, other):
            cluster.delete_namespace(name)


def _dry_run(cluster: Cluster, manifests: str) -> Any:
    return cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifests, check=False
    )


def test_rendered_manifests_pass_server_side_dry_run(
    cluster: Cluster, helm: Helm, installed: Installed
) -> None:
    renders = {
        "cluster-wide": helm.template(release="dry", namespace=installed.namespace, include_crds=True),
        "namespaced": helm.template(
            release="dry",
            namespace=installed.namespace,
            sets=[f"watchNamespaces={{{installed.watched},{installed.other}}}"],
        ),
        "custom-image": helm.template(
            release="dry", namespace=installed.namespace, values=["custom-image.yaml"]
        ),
        "irsa": helm.template(release="dry", namespace=installed.namespace, values=["irsa.yaml"]),
    }
    for name, manifests in renders.items():
        result = _dry_run(cluster, manifests)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert "(server dry run)" in result.stdout


def test_server_side_dry_run_catches_what_the_values_schema_lets_through(
    cluster: Cluster, helm: Helm, installed: Installed
) -> None:
    # affinity is passed through to the pod spec: the API server's own schema judges it.
    manifests = helm.template(
        release="dry",
        namespace=installed.namespace,
        sets=["affinity.nodeAffinity.preferredDuringScheduling=x"],
    )
    result = _dry_run(cluster, manifests)
    assert result.returncode != 0
    assert "preferredDuringScheduling" in result.stderr


def test_install_creates_roles_only_in_the_watched_namespace(cluster: Cluster, installed: Installed) -> None:
    status = json.loads(
        installed.helm.run("status", installed.release, f"-n={installed.namespace}", "-o=json").stdout
    )
    assert status["info"]["status"] == "deployed"
    roles = json.loads(
        cluster.kubectl(
            "get", "roles", "-A", "-l", f"app.kubernetes.io/instance={installed.release}", "-o", "json"
        ).stdout
    )["items"]
    where = sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles)
    prefix = installed.service_account
    assert where == sorted(
        [
            (installed.watched, f"{prefix}-{p}")
            for p in ("heapsnapshots", "policies", "capture", "credentials")
        ]
        + [(installed.namespace, f"{prefix}-leader-election")]
    )
    bindings = json.loads(
        cluster.kubectl(
            "get",
            "clusterrolebindings",
            "-l",
            f"app.kubernetes.io/instance={installed.release}",
            "-o",
            "json",
        ).stdout
    )
    assert bindings["items"] == [], "namespaced mode must bind nothing cluster-wide"
    crd = json.loads(cluster.kubectl("get", "crd", "heapsnapshots.heapsnap.dev", "-o", "json").stdout)
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])


def _allowed(
    api: client.AuthorizationV1Api,
    user: str,
    namespace: str,
    group: str,
    resource: str,
    verb: str,
    name: str | None = None,
) -> bool:
    resource, _, subresource = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{user.split(':')[2]}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace,
                group=group,
                resource=resource,
                subresource=subresource or None,
                verb=verb,
                name=name,
            ),
        )
    )
    return bool(api.create_subject_access_review(review).status.allowed)


def test_service_account_may_do_exactly_the_contract_where_it_watches(
    cluster: Cluster, installed: Installed
) -> None:
    api = client.AuthorizationV1Api(closing(cluster.api_client()))
    lease = installed.service_account  # the Lease is named after the release
    expected: dict[str, set[Grant]] = {
        installed.watched: set(WATCH_GRANTS | SECRET_GRANTS),
        installed.namespace: {g for g in lease_grants(lease) if "@" not in g[2]},
        installed.other: set(),
    }
    for namespace, want in expected.items():
        granted = {
            (group, resource, verb)
            for (group, resource), verb in itertools.product(RESOURCES, VERBS)
            if _allowed(api, installed.user, namespace, group, resource, verb)
        }
        assert granted == want, namespace
    # The Lease: get and update only by its name, create (nameless) in the release namespace.
    for verb in ("get", "update"):
        assert _allowed(
            api, installed.user, installed.namespace, "coordination.k8s.io", "leases", verb, lease
        )
        assert not _allowed(
            api, installed.user, installed.namespace, "coordination.k8s.io", "leases", verb, "other"
        )
    # Nothing cluster-wide.
    for group, resource in RESOURCES:
        assert not _allowed(api, installed.user, "", group, resource, "list"), resource


def _service_account_api(cluster: Cluster, installed: Installed) -> client.CoreV1Api:
    kubeconfig = cluster.kubeconfig_for_service_account(installed.namespace, installed.service_account)
    return client.CoreV1Api(closing(config.new_client_from_config(config_file=str(kubeconfig))))


def _exec_echo(api: client.CoreV1Api, namespace: str, pod: str) -> str:
    return str(
        stream(
            api.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=["echo", "ok"],
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    )


def test_service_account_token_reads_secrets_and_execs_only_where_it_watches(
    cluster: Cluster, installed: Installed, node_pod_factory: Any
) -> None:
    for namespace in (installed.watched, installed.other):
        cluster.kubectl(
            "create", "secret", "generic", "s3", f"-n={namespace}", "--from-literal=AWS_ACCESS_KEY_ID=x"
        )
        node_pod_factory(namespace, "app", script="setInterval(() => {}, 1000);")
    api = _service_account_api(cluster, installed)

    assert api.read_namespaced_secret("s3", installed.watched).data["AWS_ACCESS_KEY_ID"]
    with pytest.raises(ApiException) as denied:
        api.read_namespaced_secret("s3", installed.other)
    assert denied.value.status == 403

    assert _exec_echo(api, installed.watched, "app").strip() == "ok"
    with pytest.raises(ApiException) as refused:
        _exec_echo(api, installed.other, "app")
    assert "403" in str(refused.value)


def test_websocket_exec_needs_get_on_pods_exec_not_only_create(
    cluster: Cluster, installed: Installed, node_pod_factory: Any
) -> None:
    """Why the chart grants `get` beside the contract's `create` on pods/exec: a websocket
    exec is an HTTP GET, authorized as `get` (and, from 1.35, as `create` too)."""
    ns = installed.watched
    node_pod_factory(ns, "probe", script="setInterval(() => {}, 1000);")
    cluster.kubectl("create", "serviceaccount", "create-only", f"-n={ns}")
    cluster.kubectl("create", "role", "create-only", f"-n={ns}", "--verb=create", "--resource=pods/exec")
    cluster.kubectl(
        "create",
        "rolebinding",
        "create-only",
        f"-n={ns}",
        "--role=create-only",
        f"--serviceaccount={ns}:create-only",
    )
    kubeconfig = cluster.kubeconfig_for_service_account(ns, "create-only")
    api = client.CoreV1Api(closing(config.new_client_from_config(config_file=str(kubeconfig))))
    with pytest.raises(ApiException) as refused:
        _exec_echo(api, ns, "probe")
    assert "403" in str(refused.value)


def test_notes_example_is_a_heapsnapshot_the_api_server_accepts(
    cluster: Cluster, installed: Installed
) -> None:
    assert "kubectl -n" in installed.notes and "get hsnap" in installed.notes
    example = installed.notes.split("cat <<YAML", 1)[1].split("\n", 1)[1].split("  YAML", 1)[0]
    result = cluster.kubectl(
        "create",
        "--dry-run=server",
        f"-n={installed.watched}",
        "-f",
        "-",
        input=textwrap.dedent(example),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "heapsnap analyze NAME --html report.html" in installed.notes
    # The metrics address the notes give is the Service the release created, on its port.
    match = re.search(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)/metrics", installed.notes)
    assert match, installed.notes
    service = json.loads(cluster.kubectl("get", "service", match[1], "-n", match[2], "-o", "json").stdout)
    assert [p["port"] for p in service["spec"]["ports"]] == [int(match[3])]


def test_uninstall_keeps_the_crd_and_removes_everything_else(cluster: Cluster, helm: Helm) -> None:
    n = next(_ids)
    release, ns = f"hsu{n}", f"hs-uninstall-{n}"
    cluster.create_namespace(ns)
    try:
        helm.run("install", release, str(CHART), f"--namespace={ns}")
        helm.run("uninstall", release, f"--namespace={ns}")
        left = cluster.kubectl(
            "get",
            "clusterroles,clusterrolebindings,roles,rolebindings,deployments,serviceaccounts",
            "-A",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout
        assert left.strip() == ""
        assert cluster.kubectl("get", "crd", "heapsnapshots.heapsnap.dev", "-o", "name").stdout.strip()
    finally:
        cluster.delete_namespace(ns)


# --- the operator, installed from the image's virtualenv, as the chart's ServiceAccount --------


def _portable_kubeconfig(cluster: Cluster, installed: Installed, directory: Path) -> Path:
    """The ServiceAccount's token kubeconfig with the CA inlined, readable by the image's user."""
    source = cluster.kubeconfig_for_service_account(installed.namespace, installed.service_account)
    kubeconfig = yaml.safe_load(source.read_text())
    for entry in kubeconfig["clusters"]:
        if "certificate-authority" in entry["cluster"]:
            ca = Path(entry["cluster"].pop("certificate-authority"))
            entry["cluster"]["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o644)
    return path


def _deployment_env(installed: Installed) -> dict[str, str]:
    """The operator container's literal env, as the installed release renders it."""
    manifest = installed.helm.run(
        "get", "manifest", installed.release, f"--namespace={installed.namespace}"
    ).stdout
    (deployment,) = [o for o in yaml.safe_load_all(manifest) if o and o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.slow
def test_operator_from_the_image_runs_as_the_chart_identity(
    cluster: Cluster,
    installed: Installed,
    image_venv: ImageVenv,
    tmp_path: Path,
) -> None:
    """The image's install, as the image's user on a read-only tree, with the release's
    env and its ServiceAccount token: it serves /healthz and /metrics and takes its Lease. (The capture
    with this identity and the exit on SIGTERM are the next test's.)"""
    pod_name = f"{installed.service_account}-5d8f7c9b4-x2k7q"
    port = free_port()
    env = _deployment_env(installed) | {
        "POD_NAME": pod_name,
        "POD_NAMESPACE": installed.namespace,
        "HEAPSNAP_HEALTH_PORT": str(port),
        "KUBECONFIG": str(_portable_kubeconfig(cluster, installed, image_venv.scratch)),
    }
    log = tmp_path / "operator.log"
    operator = _start_image_operator(image_venv, env, log)
    try:
        wait_until("the operator's /healthz", lambda: _healthz(port), 60, logs=[log])
        wait_until(
            "the operator to take its Lease",
            lambda: "became leader" in log.read_text(errors="replace"),
            60,
            logs=[log],
        )
        peak = _peak_rss_kib(operator.pid)
        print(f"operator peak RSS, idle leader: {peak / 1024:.1f} MiB")
        # The chart's metrics Service points at this port: the image serves Prometheus' format.
        wait_until("/metrics to show the leader", lambda: "\nheapsnap_leader 1.0\n" in _metrics(port), 10)
        assert "\nheapsnap_captures_running 0.0\n" in _metrics(port)
    finally:
        os.killpg(operator.pid, signal.SIGTERM)
        try:
            operator.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)
            operator.wait(10)


def _start_image_operator(image_venv: ImageVenv, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The operator from the image's virtualenv, as the image's user, logging to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(image_venv.venv / "bin/heapsnap-operator")],
            env=image_venv.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **image_venv.user(),
        )


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    with running_moto() as server:
        yield server


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_snapshot(cluster, namespace, name).get("status") or {})


@pytest.mark.slow
def test_operator_as_the_chart_identity_captures_where_it_watches_and_stops_cleanly(
    cluster: Cluster,
    installed: Installed,
    image_venv: ImageVenv,
    node_pod_factory: Any,
    moto: S3Server,
    tmp_path: Path,
) -> None:
    """With only the ServiceAccount's rights the operator captures a pod in the watched
    namespace to S3, never touches a HeapSnapshot elsewhere, and on SIGTERM exits 0 and
    hands its Lease back."""
    bucket = moto.create_bucket()
    for ns in (installed.watched, installed.other):
        cluster.kubectl(
            "create", "secret", "generic", "s3-credentials", "-n", ns,
            f"--from-literal=AWS_ACCESS_KEY_ID={moto.access_key}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={moto.secret_key}",
        )  # fmt: skip
    pod = node_pod_factory(installed.watched, "leaky", script=LEAKY_APP, env={"LEAKY_COUNT": "2000"})
    storage = {
        "s3": {
            "bucket": bucket,
            "endpoint": moto.endpoint,
            "forcePathStyle": True,
            "region": "us-east-1",
            "credentialsSecret": "s3-credentials",
        }
    }
    spec = {
        "target": {"podName": "leaky", "process": {"pid": pod.pid}},
        "storage": storage,
        "timeoutSeconds": 120,
    }
    apply_snapshot(cluster, installed.other, "elsewhere", spec)
    release_env = _deployment_env(installed)
    lease = release_env["HEAPSNAP_LEASE_NAME"]
    env = release_env | {
        "POD_NAME": f"{installed.service_account}-5d8f7c9b4-x2k7q",
        "POD_NAMESPACE": installed.namespace,
        "HEAPSNAP_HEALTH_PORT": "0",
        "HEAPSNAP_LOG_LEVEL": "DEBUG",
        "KUBECONFIG": str(_portable_kubeconfig(cluster, installed, image_venv.scratch)),
    }
    log = tmp_path / "operator.log"
    operator = _start_image_operator(image_venv, env, log)
    try:
        apply_snapshot(cluster, installed.watched, "snap", spec)
        wait_until(
            "the HeapSnapshot to finish",
            lambda: _status(cluster, installed.watched, "snap").get("phase") in ("Succeeded", "Failed"),
            120,
            logs=[log],
        )
        status = _status(cluster, installed.watched, "snap")
        assert status["phase"] == "Succeeded", status
        key = status["artifact"]["uri"].split("/", 3)[3]
        stored = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == status["artifact"]["sha256"]
        assert _status(cluster, installed.other, "elsewhere") == {}
        operator.send_signal(signal.SIGTERM)
        assert operator.wait(30) == 0, log.read_text(errors="replace")
        out = cluster.kubectl("get", "lease", lease, "-n", installed.namespace, "-o", "json").stdout
        assert not json.loads(out)["spec"].get("holderIdentity")
    finally:
        if operator.poll() is None:
            os.killpg(operator.pid, signal.SIGKILL)
            operator.wait(10)
