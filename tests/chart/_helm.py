"""The real helm binary (built by dev/k8s/build.sh) and the objects it renders."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from heapsnap.devcluster import harness

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "heapsnap"
VALUES = Path(__file__).resolve().parent / "values"

Obj = dict[str, Any]


class Helm:
    """Runs helm with its config, cache and data folders under ``home``, never the user's."""

    def __init__(self, home: Path, kubeconfig: Path | None = None) -> None:
        harness.require_binaries()
        self.path = harness.bin_dir() / "helm"
        # helm built with `go install` (not helm's Makefile) assumes Kubernetes 1.20 when it
        # renders offline; the chart needs 1.30 or later, so say which one we test against.
        self.kube_version = harness.versions()["KUBERNETES_VERSION"]
        self.kubeconfig = kubeconfig
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.path), *args]
        if args[0] in ("template", "lint"):
            argv.append(f"--kube-version={self.kube_version}")
        if self.kubeconfig is not None:
            argv.append(f"--kubeconfig={self.kubeconfig}")
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def template(
        self,
        *,
        release: str = "hs",
        namespace: str = "heapsnap-system",
        values: Sequence[str] = (),
        sets: Sequence[str] = (),
        include_crds: bool = False,
    ) -> str:
        args = [
            "template",
            release,
            str(CHART),
            f"--namespace={namespace}",
        ]
        args += [f"--values={VALUES / name}" for name in values]
        args += [f"--set={item}" for item in sets]
        if include_crds:
            args.append("--include-crds")
        return self.run(*args).stdout


def load_all(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Manifests:
    """Rendered objects with look-ups by kind, name and namespace."""

    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        for o in self.of_kind(kind):
            meta = o["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
                return o
        return None

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        found = self.find(kind, name, namespace)
        assert found is not None, f"{kind} {namespace or ''}/{name} not rendered: {self.names()}"
        return found

    def names(self) -> list[str]:
        return sorted(
            f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in self.objects
        )


_SEGMENT = re.compile(r"\[([^\]]+)\]|([^.\[\]]+)")


def path_get(obj: Any, path: str) -> Any:
    """The value at ``path``: dotted keys; ``[0]`` indexes a list, ``[name=X]`` picks the
    list item whose name is X, and ``[a.b/c]`` is a key that holds dots (label keys)."""
    for bracketed, plain in _SEGMENT.findall(path):
        if plain:
            assert isinstance(obj, dict) and plain in obj, f"{plain!r} missing from {obj}"
            obj = obj[plain]
        elif bracketed.isdigit():
            obj = obj[int(bracketed)]
        elif "=" in bracketed and isinstance(obj, list):
            key, want = bracketed.split("=", 1)
            matches = [item for item in obj if item.get(key) == want]
            assert matches, f"no item with {key}={want} in {obj}"
            obj = matches[0]
        else:
            assert isinstance(obj, dict) and bracketed in obj, f"{bracketed!r} missing from {obj}"
            obj = obj[bracketed]
    return obj


Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def grants_of(manifests: Manifests, service_account: str, namespace: str) -> dict[str, set[Grant]]:
    """What the rendered RBAC grants ``namespace/service_account``, by scope: "" for
    cluster-wide (ClusterRoleBindings), else the namespace of the RoleBinding. Each grant
    carries the resourceNames it is limited to, as a suffix of the verb (``get@name``)."""
    roles = {("ClusterRole", r["metadata"]["name"], ""): r for r in manifests.of_kind("ClusterRole")}
    roles |= {
        ("Role", r["metadata"]["name"], r["metadata"]["namespace"]): r for r in manifests.of_kind("Role")
    }
    scopes: dict[str, set[Grant]] = {}
    for binding in [*manifests.of_kind("ClusterRoleBinding"), *manifests.of_kind("RoleBinding")]:
        subjects = binding.get("subjects", [])
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account and s["namespace"] == namespace
            for s in subjects
        ):
            continue
        scope = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"], scope if ref["kind"] == "Role" else "")]
        scopes.setdefault(scope, set()).update(_expand(role["rules"]))
    return scopes


def _expand(rules: Iterable[Obj]) -> Iterator[Grant]:
    for rule in rules:
        names = rule.get("resourceNames")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    if names:
                        for name in names:
                            yield (group, resource, f"{verb}@{name}")
                    else:
                        yield (group, resource, verb)
