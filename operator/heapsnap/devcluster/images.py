"""Container images for the real node, made without a registry or a container engine.

Each image is one deterministic layer (a tar of a root filesystem with every mtime at 0 and
names in sorted order) in an OCI image archive that ``ctr images import`` loads into
containerd. An image is cached under ``$HEAPSNAP_CACHE/images`` by a key of everything that
goes into it, so the same inputs give the same archive, byte for byte.

- ``pause``: a static C program that sleeps and reaps children (the pods' sandbox).
- ``node-distroless:<major>``: only the ``node`` binary at ``/nodejs/bin/node`` (not on
  PATH), the libraries ``ldd`` names, ``/etc/passwd`` and ``/tmp``; no shell; uid 65532.
  The layout of gcr.io/distroless/nodejs.
- ``node-debian:<major>``: a Debian bookworm base (debootstrap, Debian's packages) with a
  shell and ``node`` at ``/usr/local/bin/node``, as the official node images have it.
- ``heapsnap-operator:<version>``: the Dockerfile's final stage. Its build stage is replayed
  (:mod:`heapsnap.devcluster.dockerfile`) in a private mount namespace, so that the
  virtualenv is built at the path the Dockerfile gives it (``/opt/heapsnap``), with the
  base's own Python 3.11 (Debian's, as the slim image's is CPython 3.11), and the final
  stage's ENV, USER, EXPOSE, LABEL and ENTRYPOINT become the image's config.

``python -m heapsnap.devcluster.images build`` builds them all (``dev/setup.d``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isal import igzip

from heapsnap import __version__
from heapsnap.devcluster import dockerfile
from heapsnap.devcluster.harness import ClusterError, cache_dir, node_binary

REPO = Path(__file__).resolve().parents[3]
# Bump when a builder below changes what it puts into an image.
_BUILDERS_VERSION = "2"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# python3.11 for the operator; libstdc++6 for node (ldd names it).
DEBIAN_PACKAGES = ("python3.11", "libstdc++6")
NONROOT = 65532
PAUSE_IMAGE = "localhost/pause:local"
OPERATOR_REPOSITORY = "localhost/heapsnap-operator"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The Node.js majors of the node images (Node 20 and a current release).
NODE_MAJORS = ("20", "24")
_TRIM = ("var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man",
         "usr/share/info", "usr/share/locale", "var/cache/debconf", "dev")  # fmt: skip
_PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
"""


@dataclass(frozen=True)
class Image:
    """An OCI image archive in the cache."""

    name: str
    archive: Path
    digest: str
    """The manifest's digest, ``sha256:...``: what containerd reports as the image's id."""


def images_dir() -> Path:
    return cache_dir() / "images"


def operator_image_name() -> str:
    return f"{OPERATOR_REPOSITORY}:{__version__}"


def node_image_name(flavor: str, major: str) -> str:
    return f"localhost/node-{flavor}:{major}"


# --- the archive ----------------------------------------------------------------------

Owner = Callable[[str], tuple[int, int] | None]


def layer_tar(rootfs: Path, out: io.BufferedIOBase, owner: Owner | None = None) -> None:
    """Writes ``rootfs`` as a tar in sorted order, mtimes 0, numeric owners only.
    ``owner(path)`` may give a (uid, gid) for a path inside the image."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uname = info.gname = ""
        forced = owner(info.name) if owner else None
        if forced:
            info.uid, info.gid = forced
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            base = Path(dirpath)
            for name in sorted([*dirnames, *filenames]):
                path = base / name
                arcname = str(path.relative_to(rootfs))
                tar.add(path, arcname=arcname, recursive=False, filter=normalize)
            # os.walk does not descend into symlinked directories: they are added as links.
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def write_archive(
    rootfs: Path, config: Mapping[str, Any], name: str, out: Path, owner: Owner | None = None
) -> Image:
    """An OCI image archive of one layer made of ``rootfs``, with ``config`` as the image
    config's ``config`` (Env, User, Entrypoint, ...), named ``name`` for containerd."""
    with tempfile.TemporaryDirectory(prefix="heapsnap-oci-", dir=out.parent) as scratch:
        layout = Path(scratch)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_path = layout / "layer.tar.gz"
        diff = hashlib.sha256()
        # isal (a dependency already, for snapshots) compresses several times faster than zlib.
        with (
            layer_path.open("wb") as raw,
            igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=2, mtime=0) as gz,  # type: ignore[no-untyped-call]
        ):

            class Tee(io.RawIOBase):
                def writable(self) -> bool:
                    return True

                def write(self, b: Any) -> int:
                    diff.update(b)
                    gz.write(b)  # type: ignore[no-untyped-call]
                    return len(b)

            layer_tar(rootfs, Tee(), owner)  # type: ignore[arg-type]
        layer_digest = hashlib.sha256()
        with layer_path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                layer_digest.update(chunk)
        layer_size = layer_path.stat().st_size
        layer_path.rename(blobs / layer_digest.hexdigest())
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": dict(config),
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff.hexdigest()}"]},
            "history": [{"created_by": "heapsnap.devcluster.images"}],
        }
        config_digest, config_size = _blob(blobs, json.dumps(image_config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer_digest.hexdigest()}",
                    "size": layer_size,
                }
            ],
        }
        manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as archive:
            layer_tar(layout, archive)
        tmp.rename(out)
    return Image(name, out, manifest_digest)


# --- the cache ------------------------------------------------------------------------


def _digest_of(*parts: bytes | str) -> str:
    h = hashlib.sha256(_BUILDERS_VERSION.encode())
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so"):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _cached(name: str, key: str, build: Callable[[Path], Image]) -> Image:
    """The image ``name`` for ``key`` from the cache, built by ``build(archive)`` if absent."""
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", name.removeprefix("localhost/")) + f"-{key}"
    archive, meta = folder / f"{stem}.tar", folder / f"{stem}.json"
    if archive.exists() and meta.exists():
        return Image(name, archive, json.loads(meta.read_text())["digest"])
    image = build(archive)
    meta.write_text(json.dumps({"name": name, "digest": image.digest}))
    # Older builds of the same image (the operator's, at each change of the source).
    prefix = stem[: -len(key)]
    for old in folder.glob(f"{prefix}*"):
        if (
            old.suffix in (".tar", ".json")
            and old.stem != stem
            and re.fullmatch(r"[0-9a-f]{16}", old.stem[len(prefix) :])
        ):
            old.unlink(missing_ok=True)
    return image


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ClusterError(f"building {what} needs root (debootstrap, a mount namespace): run as root")


# --- the Debian base ------------------------------------------------------------------


@functools.cache
def debian_base() -> Path:
    """A bookworm root filesystem made by debootstrap from Debian's packages (cached)."""
    key = _digest_of(DEBIAN_SUITE, DEBIAN_MIRROR, *DEBIAN_PACKAGES, *_TRIM)
    rootfs = images_dir() / f"debian-{DEBIAN_SUITE}-{key}"
    if (rootfs / ".complete").exists():
        return rootfs
    _require_root("the Debian base")
    if not shutil.which("debootstrap"):
        raise ClusterError("debootstrap is missing: run `bash dev/setup.sh` (dev/setup.d/35-realnode.sh)")
    shutil.rmtree(rootfs, ignore_errors=True)
    tmp = rootfs.with_name(rootfs.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}", DEBIAN_SUITE,
         str(tmp), DEBIAN_MIRROR],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    for trimmed in _TRIM:
        path = tmp / trimmed
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    # Per-machine and per-run files, so that the image does not depend on when it was made.
    (tmp / "etc/machine-id").write_text("")
    for volatile in ("var/cache/ldconfig/aux-cache", "etc/ld.so.cache"):
        (tmp / volatile).unlink(missing_ok=True)
    subprocess.run(["chroot", str(tmp), "/sbin/ldconfig"], check=True, timeout=60)
    (tmp / ".complete").write_text(DEBIAN_SUITE)
    tmp.rename(rootfs)
    return rootfs


def _copy_base(base: Path, into: Path) -> None:
    subprocess.run(["cp", "-a", f"{base}/.", str(into)], check=True, timeout=300)
    (into / ".complete").unlink(missing_ok=True)


# --- pause ------------------------------------------------------------------------------


@functools.cache
def pause_image() -> Image:
    def build(archive: Path) -> Image:
        with tempfile.TemporaryDirectory(prefix="heapsnap-pause-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            rootfs.mkdir()
            source = Path(tmp) / "pause.c"
            source.write_text(_PAUSE_C)
            cc = shutil.which("gcc") or shutil.which("cc")
            if not cc:
                raise ClusterError("gcc is missing: the pause image is a static C program")
            subprocess.run([cc, "-static", "-Os", "-s", "-o", str(rootfs / "pause"), str(source)],
                           check=True, timeout=120)  # fmt: skip
            return write_archive(
                rootfs, {"Entrypoint": ["/pause"], "User": "65535:65535"}, PAUSE_IMAGE, archive
            )

    gcc_version = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    return _cached(PAUSE_IMAGE, _digest_of(_PAUSE_C, gcc_version), build)


# --- Node.js ------------------------------------------------------------------------------


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads, the dynamic loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True, timeout=30).stdout
    paths = []
    for line in out.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            paths.append(Path(match.group(1)))
    return paths


def _install(source: Path, rootfs: Path, at: str) -> None:
    target = rootfs / at.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


def _nonroot_files(rootfs: Path) -> None:
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (rootfs / "etc/group").write_text(f"root:x:0:\nnonroot:x:{NONROOT}:\n")
    for folder in ("tmp", "home/nonroot"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def _owned_by_nonroot(path: str) -> tuple[int, int] | None:
    return (NONROOT, NONROOT) if path == "home/nonroot" or path.startswith("home/nonroot/") else None


@functools.cache
def node_image(flavor: str, major: str) -> Image:
    """``node-distroless:<major>`` or ``node-debian:<major>``."""
    if flavor not in ("distroless", "debian"):
        raise ValueError(f"unknown node image flavor {flavor!r}: distroless or debian")
    node = node_binary(major)
    name = node_image_name(flavor, major)
    libraries = _libraries(node)
    base = debian_base() if flavor == "debian" else None
    key = _digest_of(
        flavor, hashlib.sha256(node.read_bytes()).hexdigest(), *map(str, libraries), str(base or "")
    )

    def build(archive: Path) -> Image:
        with tempfile.TemporaryDirectory(prefix="heapsnap-node-", dir=images_dir()) as tmp:
            rootfs = Path(tmp) / "rootfs"
            rootfs.mkdir()
            if flavor == "distroless":
                _install(node, rootfs, "/nodejs/bin/node")
                for library in libraries:
                    _install(library, rootfs, str(library))
                _nonroot_files(rootfs)
                config: dict[str, Any] = {
                    "Env": [f"PATH={DEFAULT_PATH}"],
                    "User": f"{NONROOT}:{NONROOT}",
                    "WorkingDir": "/home/nonroot",
                    "Entrypoint": ["/nodejs/bin/node"],
                }
            else:
                assert base is not None
                _copy_base(base, rootfs)
                _install(node, rootfs, "/usr/local/bin/node")
                config = {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["node"]}
            return write_archive(rootfs, config, name, archive, _owned_by_nonroot)

    return _cached(name, key, build)


# --- the operator -------------------------------------------------------------------------


def wheel_cache() -> Path:
    """The wheels of the image's lock files, downloaded by dev/setup.d/50-chart-tools.sh."""
    locks = ("requirements.lock", "requirements-build.lock")
    digest = hashlib.sha256(b"".join((REPO / name).read_bytes() for name in locks)).hexdigest()[:16]
    wheels = cache_dir() / "image-wheels" / digest
    if not (wheels / ".complete").exists():
        raise ClusterError(f"{wheels} is missing: run `bash dev/setup.d/50-chart-tools.sh`")
    return wheels


def final_stage_config(text: str) -> dict[str, Any]:
    """The image config (Env, User, ExposedPorts, Labels, Entrypoint) that ``docker build``
    would give the Dockerfile's final stage, from its ENV, USER, EXPOSE, LABEL, ENTRYPOINT."""
    _, stages = dockerfile.parse(text)
    final = stages[-1]
    env = {"PATH": DEFAULT_PATH}
    for key, value in final.env().items():
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    labels: dict[str, str] = {}
    for arg in final.all("LABEL"):
        for key, value in re.findall(r'(\S+?)="([^"]*)"', arg):
            labels[key] = value
    (user,) = final.all("USER")
    (entrypoint,) = final.all("ENTRYPOINT")
    config: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in env.items()],
        "User": user,
        "Entrypoint": json.loads(entrypoint),
        "Labels": labels,
        "ExposedPorts": {f"{port}/tcp" if "/" not in port else port: {} for port in final.all("EXPOSE")},
    }
    return config


def _runtime_copies(text: str) -> list[str]:
    """The paths the final stage copies from the build stage (``COPY --from=build A A``)."""
    _, stages = dockerfile.parse(text)
    paths = []
    for arg in stages[-1].all("COPY"):
        parts = arg.split()
        if not parts[0].startswith("--from=") or len(parts) != 3 or parts[1] != parts[2]:
            raise ValueError(f"the final stage's COPY must be `--from=build PATH PATH`: {arg}")
        paths.append(parts[1])
    if stages[-1].all("RUN"):
        raise ValueError("the final stage has RUN lines: the real node's image builder cannot replay them")
    return paths


def build_runtime_tree(out: Path) -> None:
    """Runs inside ``unshare --mount``: replays the build stage with its own absolute paths
    (tmpfs on /opt and /usr/local/bin, private to this namespace) and copies what the final
    stage takes from it into ``out``."""
    text = (REPO / "Dockerfile").read_text()
    _, stages = dockerfile.parse(text)
    build = next(s for s in stages if s.name == "build")
    for mountpoint in ("/opt", "/usr/local/bin"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", mountpoint], check=True, timeout=30)
    root = Path("/opt/.build-root")
    root.mkdir()
    python = next((p for p in ("/usr/bin/python3.11",) if Path(p).exists()), None)
    if python is None:
        raise ClusterError(
            "/usr/bin/python3.11 is missing: the image's virtualenv is built with Debian's Python 3.11"
        )
    dockerfile.replay_build_stage(
        build,
        REPO,
        root,
        relocate={},
        python=Path(python),
        extra_env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheel_cache())},
        bindir=Path("/usr/local/bin"),
    )
    for path in _runtime_copies(text):
        target = out / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path, target, symlinks=True)


@functools.cache
def operator_image() -> Image:
    """The operator image: the Debian base, ``python`` where the python image has it, and
    the final stage's copies from the replayed build stage."""
    text = (REPO / "Dockerfile").read_text()
    base = debian_base()
    inputs = [text, str(base), _tree_digest(REPO / "operator" / "heapsnap")]
    for name in ("requirements.lock", "requirements-build.lock", "pyproject.toml", "setup.py", "README.md"):
        inputs.append((REPO / name).read_text())
    name = operator_image_name()

    def build(archive: Path) -> Image:
        _require_root("the operator image")
        with tempfile.TemporaryDirectory(prefix="heapsnap-operator-", dir=images_dir()) as tmp:
            rootfs = Path(tmp) / "rootfs"
            rootfs.mkdir()
            _copy_base(base, rootfs)
            (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3.11")
            result = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
                 "heapsnap.devcluster.images", "_runtime-tree", str(rootfs)],
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if result.returncode != 0:
                raise ClusterError(f"replaying the Dockerfile's build stage failed:\n{result.stderr[-4000:]}")
            return write_archive(rootfs, final_stage_config(text), name, archive)

    return _cached(name, _digest_of(*inputs), build)


def all_images() -> list[Image]:
    images = [pause_image(), operator_image()]
    images += [node_image(flavor, major) for flavor in ("distroless", "debian") for major in NODE_MAJORS]
    return images


def main(argv: list[str]) -> int:
    if argv[:1] == ["_runtime-tree"]:
        build_runtime_tree(Path(argv[1]))
        return 0
    if argv[:1] == ["build"]:
        for image in all_images():
            size = image.archive.stat().st_size / 2**20
            print(f"{image.name:40} {image.digest[:19]}  {size:6.1f} MiB  {image.archive}")
        return 0
    print("usage: python -m heapsnap.devcluster.images build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
