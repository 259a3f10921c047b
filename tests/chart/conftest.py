"""Fixtures of the chart and image tests: the real helm, and the image's virtualenv built by
replaying the Dockerfile's build stage (offline, from the wheels dev/setup.d/50-chart-tools.sh
cached for the lock files)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from heapsnap.devcluster import dockerfile as _dockerfile
from heapsnap.devcluster import images

REPO = Path(__file__).resolve().parents[2]
LOCKS = ("requirements.lock", "requirements-build.lock")


@dataclass(frozen=True)
class ImageVenv:
    """The image's /opt/heapsnap, built here. ``scratch`` is writable by everyone (the
    container's /tmp); everything else under ``root`` is read-only after the build."""

    root: Path
    venv: Path
    build_venv: Path
    scratch: Path
    final_env: dict[str, str]

    def env(self, **extra: str) -> dict[str, str]:
        """The final stage's environment, with its paths moved here."""
        return {**self.final_env, "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", **extra}

    @staticmethod
    def user() -> dict[str, int]:
        """subprocess arguments that run as the image's UID and GID when we are root (as in
        CI), so that the read-only permissions bite; else as ourselves."""
        return {"user": 65532, "group": 65532} if os.geteuid() == 0 else {}


@pytest.fixture(scope="session")
def image_venv() -> Iterator[ImageVenv]:
    if sys.version_info[:2] != (3, 11):
        raise AssertionError("the image runs Python 3.11: run the tests with the project's 3.11 venv")
    # The system's python3.11 first: the operator later runs as another user, who cannot
    # enter a per-user installation such as pyenv's under /root.
    python = next(
        (p for p in ("/usr/bin/python3.11", shutil.which("python3.11")) if p and Path(p).exists()), None
    )
    assert python, "python3.11 is not on PATH"
    _, stages = _dockerfile.parse((REPO / "Dockerfile").read_text())
    build = next(s for s in stages if s.name == "build")
    # Not under pytest's tmp folder (mode 0700): the operator later runs as UID 65532.
    root = Path(tempfile.mkdtemp(prefix="heapsnap-image-"))
    root.chmod(0o755)
    try:
        build_env = build.env()
        relocate = {key: root / build_env[key].lstrip("/") for key in ("VIRTUAL_ENV", "BUILD_VENV")}
        _dockerfile.replay_build_stage(
            build,
            REPO,
            root,
            relocate=relocate,
            python=Path(python),
            extra_env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(images.wheel_cache())},
        )
        final = stages[-1].env()
        scratch = root / "tmp"
        scratch.mkdir(mode=0o1777)
        scratch.chmod(0o1777)
        final_env = {k: v for k, v in final.items() if k != "PATH"} | {
            "HOME": str(scratch),
            "TMPDIR": str(scratch),
        }
        _dockerfile.readonly(relocate["VIRTUAL_ENV"])
        yield ImageVenv(root, relocate["VIRTUAL_ENV"], relocate["BUILD_VENV"], scratch, final_env)
    finally:
        for dirpath, dirnames, _ in os.walk(root):
            for name in [".", *dirnames]:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
