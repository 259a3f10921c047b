"""The HeapSnapshotPolicy CRD: generated from the HeapSnapshot CRD (so the template cannot
drift from the HeapSnapshot spec), and what the real API server rejects, naming the field."""

from __future__ import annotations

import copy
import json
import re
import runpy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

from heapsnap.errors import InvalidInput
from heapsnap.k8s.policy import parse_policy
from tests.operator.conftest import ROOT, apply_snapshot

pytestmark = [pytest.mark.policy]

POLICY_CRD = ROOT / "crds" / "heapsnap.dev_heapsnapshotpolicies.yaml"
GENERATOR = runpy.run_path(str(ROOT / "dev" / "policy-crd.py"))

GOOD: dict[str, Any] = {
    "selector": {"matchLabels": {"app": "api"}},
    "container": "app",
    "triggers": [
        {"schedule": {"cron": "0 3 * * *", "timeZone": "Europe/Berlin"}},
        {"memory": {"above": "80%"}},
        {"growth": {"by": "30%", "within": "1h"}},
        {"restart": {"reason": "OOMKilled", "after": "10m"}},
    ],
    "template": {"storage": {"s3": {"bucket": "diag"}}, "series": {"count": 3, "intervalSeconds": 120}},
    "cooldown": "6h",
    "maxConcurrent": 1,
    "historyLimit": {"succeeded": 10, "failed": 3},
}


def schema(path: Path) -> dict[str, Any]:
    (version,) = yaml.safe_load(path.read_text())["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def test_the_generated_crd_is_up_to_date() -> None:
    assert POLICY_CRD.read_text() == GENERATOR["render"](), "run .venv/bin/python dev/policy-crd.py"


def test_the_template_is_the_heapsnapshot_spec_without_its_target() -> None:
    snapshot = schema(ROOT / "crds" / "heapsnap.dev_heapsnapshots.yaml")["properties"]["spec"]
    policy = schema(POLICY_CRD)["properties"]["spec"]["properties"]
    template = policy["template"]
    fields = dict(snapshot["properties"])
    target = fields.pop("target")["properties"]
    # Every HeapSnapshot field but the target, each with the same schema.
    assert template["properties"] == fields
    assert template["required"] == [r for r in snapshot["required"] if r != "target"]
    # The target's pieces are the policy's own fields, with the same schemas.
    assert policy["container"] == target["container"] and policy["process"] == target["process"]
    assert policy["selector"]["properties"] == target["selector"]["properties"]
    rules = [r["rule"] for r in template["x-kubernetes-validations"]]
    assert all("oldSelf" not in r and "self.target" not in r for r in rules) and rules


def test_the_template_grows_with_the_heapsnapshot_spec() -> None:
    """A field added to the HeapSnapshot spec appears in the template of the generated CRD."""
    source = yaml.safe_load((ROOT / "crds" / "heapsnap.dev_heapsnapshots.yaml").read_text())
    source = copy.deepcopy(source)
    spec = source["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["redact"] = {"type": "boolean"}
    crd = GENERATOR["policy_crd"](source)
    template = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert template["template"]["properties"]["redact"] == {"type": "boolean"}


@pytest.mark.parametrize(
    ("cron", "valid"),
    [
        ("0 3 * * *", True),
        ("*/5 * * * *", True),
        ("0 9-17/2 * * MON-FRI", True),
        ("0 0 1,15 JAN,jul *", True),
        ("*/2 * * * * *", True),  # seconds first
        ("@daily", True),
        ("@hourly", True),
        ("61 * * * *", False),
        ("0 24 * * *", False),
        ("0 3 32 * *", False),
        ("0 3 * 13 *", False),
        ("0 3 * * 8", False),
        ("*/0 * * * *", False),
        ("0 3 * *", False),
        ("every day", False),
        ("@fortnightly", False),
    ],
)
def test_the_crd_cron_pattern_agrees_with_croniter(cron: str, valid: bool) -> None:
    pattern = GENERATOR["CRON_REGEX"]
    assert bool(re.match(pattern, cron)) is valid
    assert croniter.is_valid(cron, second_at_beginning=len(cron.split()) == 6) is valid


def test_parse_policy_reads_every_field() -> None:
    policy = parse_policy(GOOD)
    assert [t.kind for t in policy.triggers] == ["schedule", "memory", "growth", "restart"]
    schedule, memory, growth, restart = policy.triggers
    assert schedule.schedule is not None and schedule.schedule.time_zone == "Europe/Berlin"
    assert memory.above is not None and memory.above.percent == 80
    assert growth.by is not None and growth.by.percent == 30 and growth.within == 3600
    assert (restart.reason, restart.after) == ("OOMKilled", 600)
    assert (policy.cooldown, policy.max_concurrent, policy.keep_succeeded, policy.keep_failed) == (
        21600,
        1,
        10,
        3,
    )
    spec = policy.snapshot_spec("api-0")
    assert spec["target"] == {"podName": "api-0", "container": "app"}
    assert spec["series"] == {"count": 3, "intervalSeconds": 120}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"triggers": [{"schedule": {"cron": "0 3 * * *", "timeZone": "Mars/Olympus"}}]}, "timeZone"),
        ({"triggers": [{"memory": {"above": "120%"}}]}, "memory.above"),
        ({"triggers": [{"memory": {"above": "lots"}}]}, "memory.above"),
        ({"cooldown": "soon"}, "spec.cooldown"),
        ({"template": {"storage": {"s3": {"bucket": "s3://diag"}}}}, "spec.template.storage.s3.bucket"),
        ({"template": {"storage": {"s3": {"bucket": "d"}}, "target": {"podName": "x"}}}, "template.target"),
        ({"selector": {}}, "spec.selector"),
    ],
)
def test_parse_policy_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_policy({**GOOD, **change})
    assert field in info.value.message


# -- through the real API server ---------------------------------------------------------


@pytest.fixture(scope="session")
def policy_crd(cluster: Any, crd: Path) -> Path:
    cluster.kubectl("apply", "--server-side", "-f", str(POLICY_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/heapsnapshotpolicies.heapsnap.dev"
    )
    return POLICY_CRD


def apply_policy(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    manifest = {
        "apiVersion": "heapsnap.dev/v1alpha1",
        "kind": "HeapSnapshotPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def test_a_good_policy_is_accepted_and_its_template_makes_a_valid_heapsnapshot(
    cluster: Any, policy_crd: Path, namespace: str
) -> None:
    apply_policy(cluster, namespace, "api-leaks", GOOD)
    got = json.loads(
        cluster.kubectl("get", "heapsnapshotpolicy", "api-leaks", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"]["suspend"] is False and got["spec"]["template"]["method"] == "auto"  # defaults
    # The HeapSnapshot the operator would create passes the HeapSnapshot CRD's own validation.
    apply_snapshot(cluster, namespace, "from-template", parse_policy(got["spec"]).snapshot_spec("api-0"))
    printed = cluster.kubectl("get", "hsnappol", "-n", namespace, "-o", "wide").stdout
    assert printed.split()[:10] == [
        "NAME", "SUSPEND", "PODS", "ACTIVE", "CREATED", "LAST", "TRIGGER", "AGE", "NEXT", "SCHEDULE",
    ]  # fmt: skip


def _with(**change: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    spec.update(change)
    return spec


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            _with(triggers=[{"schedule": {"cron": "61 * * * *"}}]),
            "spec.triggers[0].schedule.cron: Invalid value",
        ),
        (_with(triggers=[{"schedule": {"cron": "0 3 * *"}}]), "not a cron schedule"),
        (_with(triggers=[{"memory": {"above": "101%"}}]), "spec.triggers[0].memory.above: Invalid value"),
        (_with(triggers=[{"memory": {"above": "0"}}]), "a memory quantity above zero"),
        (
            _with(triggers=[{"growth": {"by": "130Mi", "within": "an hour"}}]),
            "spec.triggers[0].growth.within",
        ),
        (
            _with(triggers=[{"memory": {"above": "80%"}, "schedule": {"cron": "@daily"}}]),
            "each trigger sets exactly one of schedule, memory, growth or restart",
        ),
        (_with(triggers=[]), "spec.triggers: Invalid value"),
        (_with(selector={}), "spec.selector: Invalid value"),
        (_with(selector={"matchLabels": {}}), "an empty selector would match every pod"),
        (_with(template={"storage": {"s3": {"bucket": "s3://diag"}}}), "spec.template.storage.s3.bucket"),
        (_with(template={"storage": {"s3": {"bucket": "diag"}}, "method": "gdb"}), "spec.template.method"),
        (
            _with(template={"storage": {"s3": {"bucket": "diag"}}, "series": {"count": 1}}),
            "spec.template.series.count",
        ),
        (_with(template={"method": "auto"}), "spec.template.storage: Required value"),
        (
            _with(
                template={"storage": {"s3": {"bucket": "diag"}}, "method": "signal", "series": {"count": 3}}
            ),
            "spec.series needs the inspector",
        ),
        (
            _with(
                process={"workerThreadId": 2},
                template={"storage": {"s3": {"bucket": "diag"}}, "method": "signal"},
            ),
            "spec.process.workerThreadId needs the inspector",
        ),
        (
            _with(template={"storage": {"s3": {"bucket": "diag"}}, "target": {"podName": "x"}}),
            'unknown field "spec.template.target"',
        ),
        (_with(cooldown="6 hours"), "spec.cooldown: Invalid value"),
        (_with(maxConcurrent=0), "spec.maxConcurrent"),
        (_with(historyLimit={"succeeded": -1}), "spec.historyLimit.succeeded"),
    ],
)
def test_bad_policies_are_rejected_by_the_api_server_naming_the_field(
    cluster: Any, policy_crd: Path, namespace: str, spec: dict[str, Any], words: str
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        apply_policy(cluster, namespace, "bad", spec)
    assert words in info.value.stderr


def test_kubectl_heapsnap_policy_create_makes_a_policy_the_api_server_accepts(
    cluster: Any, policy_crd: Path, namespace: str
) -> None:
    import sys

    result = subprocess.run(
        [
            *(sys.executable, "-m", "heapsnap.cli.kubectl", "-n", namespace, "policy", "create", "api-leaks"),
            *("-l", "app=api", "-c", "app", "--s3", "s3://diag/prod", "--credentials-secret", "s3-creds"),
            *("--memory-above", "80%", "--schedule", "0 3 * * *", "--time-zone", "Europe/Berlin"),
            *("--growth", "30%/1h", "--restart-after", "10m", "--cooldown", "6h"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "heapsnapshotpolicy.heapsnap.dev/api-leaks created"
    got = json.loads(
        cluster.kubectl("get", "heapsnapshotpolicy", "api-leaks", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"]["triggers"][0] == {"schedule": {"cron": "0 3 * * *", "timeZone": "Europe/Berlin"}}
    assert got["spec"]["template"]["storage"]["s3"]["prefix"] == "prod"
