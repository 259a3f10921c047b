"""The operator image without a container engine: hadolint on the Dockerfile, its shape
(non-root numeric user, nothing but the virtualenv in the final stage), and its build stage
replayed into a clean virtualenv that must hold exactly the locked dependency set."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heapsnap.devcluster import dockerfile as _dockerfile
from tests.chart.conftest import REPO, ImageVenv

HADOLINT = Path(sys.executable).parent / "hadolint"
BAD_DOCKERFILE = """FROM python:latest
RUN pip install requests
RUN cd /src && pip install .
"""


def hadolint(path: Path) -> list[dict[str, object]]:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: run `bash dev/setup.d/50-chart-tools.sh`"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold=style", "--format=json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_dockerfile_passes_hadolint_at_every_level() -> None:
    assert hadolint(REPO / "Dockerfile") == []


def test_hadolint_catches_an_unpinned_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes


def test_dockerfile_final_stage_is_the_virtualenv_only_as_a_numeric_non_root_user() -> None:
    args, stages = _dockerfile.parse((REPO / "Dockerfile").read_text())
    build, final = stages[0], stages[-1]
    assert build.name == "build" and len(stages) == 2
    assert (build.base, final.base) == ("${BUILD_IMAGE}", "${PYTHON_IMAGE}")
    slim = re.fullmatch(r"python:(3\.11(?:\.\d+)?)-slim-(\w+)(?:@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    full = re.fullmatch(r"python:(3\.11(?:\.\d+)?)-(\w+)(?:@sha256:[0-9a-f]{64})?", args["BUILD_IMAGE"])
    # The C extension is compiled against the build image's Python and runs on the final one's.
    assert slim and full and slim.groups() == full.groups(), (args["BUILD_IMAGE"], args["PYTHON_IMAGE"])
    # Everything pip installs is hash-checked and comes as a wheel; the only thing compiled
    # is heapsnap's own C extension, by the build stage's gcc.
    assert build.env()["PIP_ONLY_BINARY"] == ":all:"
    installs = [cmd for run in build.all("RUN") for cmd in run.split("&&") if " install " in cmd]
    assert installs and all("--require-hashes" in c or "--no-index dist/" in c for c in installs), installs
    # Final stage: nothing runs, only the virtualenv is copied in.
    assert final.all("RUN") == []
    assert final.all("COPY") == [f"--from=build {build.env()['VIRTUAL_ENV']} {build.env()['VIRTUAL_ENV']}"]
    (user,) = final.all("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid > 0 and gid > 0
    assert final.all("ENTRYPOINT") == ['["heapsnap-operator"]']
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp"


def _lock_pins() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE)}


@pytest.mark.slow
def test_image_virtualenv_holds_exactly_the_locked_set(image_venv: ImageVenv) -> None:
    listed = subprocess.run(
        [
            str(image_venv.build_venv / "bin/pip"),
            "--python",
            str(image_venv.venv / "bin/python"),
            "list",
            "--format=json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)}
    expected = {name.replace("_", "-"): version for name, version in _lock_pins().items()}
    assert installed == expected | {"heapsnap": "0.1.0"}
    assert not (image_venv.venv / "bin/pip").exists(), "the runtime virtualenv must not ship pip"
    assert not list(image_venv.venv.glob("lib/python3.11/site-packages/setuptools"))


@pytest.mark.slow
def test_image_entrypoint_fails_with_a_named_setting_without_writing_anything(image_venv: ImageVenv) -> None:
    before = sorted(p.name for p in image_venv.scratch.iterdir())
    result = subprocess.run(
        [str(image_venv.venv / "bin/heapsnap-operator")],
        env=image_venv.env(HEAPSNAP_MAX_CONCURRENT_CAPTURES="many"),
        capture_output=True,
        text=True,
        timeout=60,
        **image_venv.user(),
    )
    assert result.returncode == 2, result.stderr
    assert "HEAPSNAP_MAX_CONCURRENT_CAPTURES" in result.stderr
    assert sorted(p.name for p in image_venv.scratch.iterdir()) == before
