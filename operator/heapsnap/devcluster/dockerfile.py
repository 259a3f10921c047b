"""Reads the Dockerfile and replays its build stage on this machine, where no container
engine runs: the same COPY sources and the same RUN commands, in the same order. The
stage's paths (WORKDIR, the virtualenvs) either move under a temporary folder (the chart
tests' virtualenv) or stay where the Dockerfile puts them, inside a private mount
namespace (the real node's operator image, :mod:`heapsnap.devcluster.images`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_CONTINUATION = re.compile(r"\\\n")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for arg in self.all("ENV"):
            for pair in arg.split():
                key, value = pair.split("=", 1)
                values[key] = value
        return values


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, each a list of (KEYWORD, arguments)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    logical = [line for line in _CONTINUATION.sub(" ", text).splitlines() if line.strip()]
    for line in logical:
        if line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base=base, name=name or None))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            if not stages:
                raise ValueError(f"the Dockerfile has {keyword} before its first FROM")
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def replay_build_stage(
    stage: Stage,
    context: Path,
    root: Path,
    *,
    relocate: dict[str, Path],
    python: Path,
    extra_env: dict[str, str],
    bindir: Path | None = None,
) -> dict[str, str]:
    """Runs ``stage`` with ``/bin/sh -c`` like ``docker build`` would. ``relocate`` maps each
    ENV variable that holds an absolute path to its place on this machine; ``python`` is
    what the base image's ``python`` command is, linked as ``python`` in ``bindir``
    (default ``root/image-bin``): a virtualenv records that folder as its home. Returns the
    environment the RUN lines saw."""
    bindir = bindir or root / "image-bin"
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "python").symlink_to(python)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(root / "home"), **stage.env()}
    env |= {key: str(path) for key, path in relocate.items()}
    env |= extra_env
    workdir = root
    for keyword, arg in stage.instructions:
        if keyword == "WORKDIR":
            workdir = root / arg.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = arg.split()
            if any(s.startswith("--") for s in sources):
                raise ValueError(f"unsupported COPY flags in the build stage: {arg}")
            _copy(context, sources, workdir / dest)
        elif keyword == "RUN":
            subprocess.run(["/bin/sh", "-c", arg], cwd=workdir, env=env, check=True, timeout=600)
        elif keyword not in ("ENV", "LABEL"):
            raise ValueError(f"the build stage uses {keyword}, which this replay does not know")
    return env


def _copy(context: Path, sources: list[str], dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.so")
    for source in sources:
        path = context / source
        if path.is_dir():
            shutil.copytree(path, dest, ignore=ignore, dirs_exist_ok=True)
        else:
            target = (
                dest / path.name if str(dest).endswith("/") or dest.is_dir() or len(sources) > 1 else dest
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def readonly(tree: Path) -> None:
    """Takes write permission away from everything under ``tree``."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)
    tree.chmod(tree.stat().st_mode & ~0o222)
