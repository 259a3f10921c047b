"""The real node's images: deterministic archives, and an operator image that is the
Dockerfile's final stage (its config and its contents come from the Dockerfile alone)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from heapsnap.devcluster import dockerfile, images

pytestmark = [pytest.mark.realnode, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as outer:
        return {m.name: outer.extractfile(m).read() for m in outer.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _image_parts(archive: Path) -> tuple[dict[str, object], tarfile.TarFile]:
    blobs = _members(archive)
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    layer = blobs["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    return config, tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz")


def test_the_same_rootfs_gives_the_same_archive_byte_for_byte(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "tool").write_text("#!/bin/true\n")
    (rootfs / "bin" / "tool").chmod(0o755)
    (rootfs / "link").symlink_to("bin/tool")
    first = images.write_archive(rootfs, {"User": "1:1"}, "localhost/x:1", tmp_path / "a.tar")
    (rootfs / "bin" / "tool").touch()  # a new mtime changes nothing
    second = images.write_archive(rootfs, {"User": "1:1"}, "localhost/x:1", tmp_path / "b.tar")
    assert first.digest == second.digest
    assert (
        hashlib.sha256(first.archive.read_bytes()).digest()
        == hashlib.sha256(second.archive.read_bytes()).digest()
    )
    (rootfs / "bin" / "tool").write_text("#!/bin/false\n")
    third = images.write_archive(rootfs, {"User": "1:1"}, "localhost/x:1", tmp_path / "c.tar")
    assert third.digest != first.digest


def test_the_operator_image_is_the_dockerfiles_final_stage() -> None:
    text = (REPO / "Dockerfile").read_text()
    _, stages = dockerfile.parse(text)
    final = stages[-1]
    config, layer = _image_parts(images.operator_image().archive)
    got = config["config"]
    assert isinstance(got, dict)
    env = dict(item.split("=", 1) for item in got["Env"])
    for key, value in final.env().items():
        assert env[key] == value.replace("$PATH", images.DEFAULT_PATH), key
    assert got["User"] == final.all("USER")[0]
    assert got["Entrypoint"] == json.loads(final.all("ENTRYPOINT")[0])
    assert set(got["ExposedPorts"]) == {f"{p}/tcp" for p in final.all("EXPOSE")}
    assert got["Labels"]["org.opencontainers.image.title"] == "heapsnap-operator"
    names = set(layer.getnames())
    (copied,) = [arg.split()[1] for arg in final.all("COPY")]
    venv = copied.lstrip("/")
    assert f"{venv}/bin/heapsnap-operator" in names
    python = layer.getmember(f"{venv}/bin/python")
    assert python.issym() and python.linkname.startswith("/usr/local/bin/python"), python.linkname
    assert layer.getmember("usr/local/bin/python").linkname == "/usr/bin/python3.11"
    # The build stage stays behind: no build virtualenv, sources or pip in the runtime one.
    build_env = stages[0].env()
    assert build_env["BUILD_VENV"].lstrip("/") not in names and "src" not in names
    assert f"{venv}/bin/pip" not in names
