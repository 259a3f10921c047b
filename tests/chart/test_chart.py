"""The chart rendered by the real helm: lint, one table of values cases checked in one loop
(helm-unittest style), the values schema, and the CRD copy. No cluster needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.chart._contract import NODE_STATS_GRANTS, SECRET_GRANTS, WATCH_GRANTS, lease_grants
from tests.chart._helm import CHART, REPO, Grant, Helm, Manifests, grants_of, load_all, path_get

RELEASE, NAMESPACE, FULLNAME = "hs", "heapsnap-system", "hs-heapsnap"
ABSENT = object()


@dataclass(frozen=True)
class Case:
    id: str
    values: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()  # the namespaces watched; empty means cluster-wide
    secrets: bool = True
    node_stats: bool = True
    lease: str | None = FULLNAME
    service_account: str = FULLNAME
    fullname: str = FULLNAME
    # (kind, name, dotted path or "" for the object itself, expected value or ABSENT)
    expect: tuple[tuple[str, str, str, Any], ...] = field(default=())


DEPLOY = ("Deployment", FULLNAME)
CONTAINER = "spec.template.spec.containers[name=operator]"

CASES = [
    Case(
        "default",
        expect=(
            (*DEPLOY, f"{CONTAINER}.image", "heapsnap-operator:0.1.0"),
            (*DEPLOY, "spec.replicas", 1),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_WATCH_NAMESPACES].value", ""),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LEASE_NAME].value", FULLNAME),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LEASE_NAMESPACE].value", NAMESPACE),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LEADER_ELECTION].value", "true"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_MAX_CONCURRENT_CAPTURES].value", "4"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_HEALTH_PORT].value", "8080"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LOG_LEVEL].value", "INFO"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_POLICY_INTERVAL_SECONDS].value", "15"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_MEMORY_SOURCE].value", "auto"),
            (
                *DEPLOY,
                f"{CONTAINER}.env[name=POD_NAMESPACE].valueFrom.fieldRef.fieldPath",
                "metadata.namespace",
            ),
            (*DEPLOY, f"{CONTAINER}.resources.limits.memory", "320Mi"),
            (*DEPLOY, "spec.template.spec.volumes[name=tmp].emptyDir.sizeLimit", "256Mi"),
            ("ServiceAccount", FULLNAME, "metadata.namespace", NAMESPACE),
            (
                "ClusterRole",
                f"{FULLNAME}-edit",
                "metadata.labels[rbac.authorization.k8s.io/aggregate-to-edit]",
                "true",
            ),
            (
                "ClusterRole",
                f"{FULLNAME}-edit",
                "rules[0].verbs",
                ["create", "get", "list", "watch", "delete"],
            ),
            ("ClusterRole", f"{FULLNAME}-view", "rules[0].verbs", ["get", "list", "watch"]),
            ("Role", f"{FULLNAME}-leader-election", "metadata.namespace", NAMESPACE),
            (
                "Service",
                f"{FULLNAME}-metrics",
                "spec.ports",
                [
                    {"name": "metrics", "port": 8080, "targetPort": "health", "protocol": "TCP"},
                ],
            ),
            ("ServiceMonitor", FULLNAME, "", ABSENT),
        ),
    ),
    Case(
        "service-monitor",
        sets=(
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=30s",
            "metrics.serviceMonitor.labels.release=prometheus",
            "healthPort=9090",
        ),
        expect=(
            ("Service", f"{FULLNAME}-metrics", "spec.ports[name=metrics].port", 9090),
            (
                "ServiceMonitor",
                FULLNAME,
                "spec.endpoints",
                [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            ),
            ("ServiceMonitor", FULLNAME, "metadata.labels[release]", "prometheus"),
            ("ServiceMonitor", FULLNAME, "spec.namespaceSelector.matchNames", [NAMESPACE]),
        ),
    ),
    Case(
        "namespaced",
        values=("namespaced.yaml",),
        watch=("team-a", "team-b"),
        expect=(
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_WATCH_NAMESPACES].value", "team-a,team-b"),
            ("Role", f"{FULLNAME}-capture", "metadata.namespace", "team-a"),
            ("ClusterRole", f"{FULLNAME}-capture", "", ABSENT),
            ("ClusterRoleBinding", f"{FULLNAME}-heapsnapshots", "", ABSENT),
        ),
    ),
    Case(
        "aggregate-off",
        values=("aggregate-off.yaml",),
        expect=(
            ("ClusterRole", f"{FULLNAME}-edit", "", ABSENT),
            ("ClusterRole", f"{FULLNAME}-view", "", ABSENT),
        ),
    ),
    Case(
        "custom-image",
        values=("custom-image.yaml",),
        expect=(
            (
                *DEPLOY,
                f"{CONTAINER}.image",
                "registry.example.com/platform/heapsnap-operator@sha256:"
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            (*DEPLOY, f"{CONTAINER}.imagePullPolicy", "Always"),
            (*DEPLOY, "spec.template.spec.imagePullSecrets", [{"name": "registry-credentials"}]),
            (*DEPLOY, "metadata.labels[app.kubernetes.io/version]", "0.1.0-rc1"),
        ),
    ),
    Case(
        "irsa-two-replicas",
        values=("irsa.yaml",),
        secrets=False,
        lease="heapsnap-leader",
        expect=(
            (*DEPLOY, "spec.replicas", 2),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LEASE_NAME].value", "heapsnap-leader"),
            (*DEPLOY, f"{CONTAINER}.env[name=AWS_REGION].value", "eu-west-1"),
            (
                "ServiceAccount",
                FULLNAME,
                "metadata.annotations[eks.amazonaws.com/role-arn]",
                "arn:aws:iam::123456789012:role/heapsnap",
            ),
            ("ClusterRole", f"{FULLNAME}-credentials", "", ABSENT),
        ),
    ),
    Case(
        "no-leader-election-existing-service-account",
        sets=("leaderElection.enabled=false", "serviceAccount.create=false", "serviceAccount.name=ops-sa"),
        lease=None,
        service_account="ops-sa",
        expect=(
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_LEADER_ELECTION].value", "false"),
            (*DEPLOY, "spec.template.spec.serviceAccountName", "ops-sa"),
            ("ServiceAccount", FULLNAME, "", ABSENT),
            ("Role", f"{FULLNAME}-leader-election", "", ABSENT),
        ),
    ),
    Case(
        "policies-with-metrics-server-only",
        sets=("policies.readNodeStats=false", "policies.memorySource=metrics", "policies.pollSeconds=30"),
        node_stats=False,
        expect=(
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_POLICY_INTERVAL_SECONDS].value", "30"),
            (*DEPLOY, f"{CONTAINER}.env[name=HEAPSNAP_MEMORY_SOURCE].value", "metrics"),
            ("ClusterRole", f"{FULLNAME}-node-stats", "", ABSENT),
        ),
    ),
    Case(
        "fullname-override",
        sets=("fullnameOverride=heapsnap", "watchNamespaces={apps}"),
        watch=("apps",),
        lease="heapsnap",
        service_account="heapsnap",
        fullname="heapsnap",
        expect=(("Deployment", "heapsnap", "metadata.namespace", NAMESPACE),),
    ),
]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm-home"))


def test_helm_lint_passes_in_both_modes(helm: Helm) -> None:
    for extra in ([], [f"--values={REPO}/tests/chart/values/namespaced.yaml"]):
        result = helm.run("lint", "--strict", str(CHART), *extra)
        assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rendered_objects(helm: Helm, case: Case) -> None:
    manifests = Manifests(
        load_all(helm.template(release=RELEASE, namespace=NAMESPACE, values=case.values, sets=case.sets))
    )

    # The operator's ServiceAccount gets exactly the contract's verbs, in exactly the
    # watched namespaces (or cluster-wide), plus its own Lease in the release namespace.
    expected: dict[str, set[Grant]] = {}
    for scope in case.watch or ("",):
        expected[scope] = set(WATCH_GRANTS | (SECRET_GRANTS if case.secrets else frozenset()))
    if case.lease:
        expected.setdefault(NAMESPACE, set()).update(lease_grants(case.lease))
    if case.node_stats and not case.watch:
        expected.setdefault("", set()).update(NODE_STATS_GRANTS)
    assert grants_of(manifests, case.service_account, NAMESPACE) == expected

    deployment = manifests.get("Deployment", case.fullname)
    _assert_restricted(deployment)
    # /metrics is reached through the operator pods' own labels, on the probes' port.
    for service in manifests.of_kind("Service"):
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for monitor in manifests.of_kind("ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    for obj in manifests.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/version", "helm.sh/chart"} <= labels.keys()

    for kind, name, path, want in case.expect:
        found = manifests.find(kind, name)
        if want is ABSENT:
            assert found is None, f"{kind} {name} should not be rendered"
            continue
        assert found is not None, f"{kind} {name} not rendered: {manifests.names()}"
        assert path_get(found, path) == want, f"{kind} {name} {path}"


def _assert_restricted(deployment: dict[str, Any]) -> None:
    """The "restricted" Pod Security Standard, and the probes and /tmp volume it needs."""
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert isinstance(security["runAsUser"], int) and security["runAsUser"] > 0
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert "emptyDir" in path_get(pod, "volumes[name=tmp]")
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"]["memory"]


# (values given with --set, what helm must say): each is a typo or a wrong type.
REJECTED = [
    ("unknown-top-level-key", "watchNamespace={a}", "watchNamespace"),
    ("unknown-nested-key", "image.tagg=1.0", "tagg"),
    ("unknown-rbac-key", "rbac.aggregateToAdmin=true", "aggregateToAdmin"),
    ("integer-as-string", "replicaCount=two", "replicaCount"),
    ("list-as-string", "watchNamespaces=team-a", "watchNamespaces"),
    ("boolean-as-string", "rbac.create=yes", "create"),
    ("invalid-namespace-name", "watchNamespaces={Team_A}", "watchNamespaces"),
    ("unknown-log-level", "logLevel=TRACE", "logLevel"),
    ("port-below-1024", "healthPort=80", "healthPort"),
    ("bad-digest", "image.digest=latest", "digest"),
    ("bad-scrape-interval", "metrics.serviceMonitor.interval=30", "interval"),
    ("unknown-memory-source", "policies.memorySource=prometheus", "memorySource"),
    ("poll-too-often", "policies.pollSeconds=0", "pollSeconds"),
]


@pytest.mark.parametrize(("setting", "named"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_schema_rejects_typos_and_wrong_types(helm: Helm, setting: str, named: str) -> None:
    result = helm.run("template", "hs", str(CHART), f"--set={setting}", check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "schema" in result.stderr and named in result.stderr, result.stderr


# (values that contradict each other, the fix helm must name).
CONTRADICTIONS = [
    (
        "two-replicas-without-leader-election",
        ("replicaCount=2", "leaderElection.enabled=false"),
        "needs leaderElection.enabled: true",
    ),
    (
        "service-monitor-without-its-service",
        ("metrics.service.enabled=false", "metrics.serviceMonitor.enabled=true"),
        "needs metrics.service.enabled",
    ),
]


@pytest.mark.parametrize(("sets", "fix"), [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS])
def test_contradictory_values_fail_with_the_fix(helm: Helm, sets: tuple[str, ...], fix: str) -> None:
    result = helm.run("template", "hs", str(CHART), *(f"--set={item}" for item in sets), check=False)
    assert result.returncode != 0
    assert fix in result.stderr, result.stderr


def test_chart_crds_are_an_identical_copy_of_the_source_of_truth() -> None:
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    copy = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert source, "no CRD in crds/"
    assert copy == source, "run dev/sync-crds.sh"
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"helm/heapsnap/crds/{name} differs from crds/{name}: run dev/sync-crds.sh"
        )


def test_every_values_key_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "- ")):
            above = lines[number - 2].strip()
            assert above.startswith("#"), f"values.yaml:{number} `{stripped}` has no comment above it"
