from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

from heapsnap.cli.kubectl import analysis_plan, build_manifest, build_parser, download, parse_s3_uri
from heapsnap.errors import InvalidInput, StorageError
from heapsnap.k8s.types import parse_spec


def test_capture_manifest_is_a_valid_spec() -> None:
    args = build_parser().parse_args(
        [
            *("capture", "api-0", "-c", "app", "--s3", "s3://snaps/heap/"),
            *("--endpoint", "http://127.0.0.1:9000", "--path-style", "--credentials-secret", "s3"),
            *("--method", "inspector", "--timeout", "60", "--pid", "7", "--worker", "2"),
            *("--sse-kms-key-id", "alias/heap"),
            *("--series", "3", "--interval", "30", "--sample-allocations"),
        ]
    )
    manifest = build_manifest(args, "shop")
    assert manifest["metadata"] == {"generateName": "api-0-", "namespace": "shop"}
    spec = parse_spec(manifest["spec"])
    assert (spec.target.pod_name, spec.target.container, spec.method) == ("api-0", "app", "inspector")
    assert (spec.s3.bucket, spec.s3.prefix, spec.s3.force_path_style) == ("snaps", "heap", True)
    assert (spec.s3.credentials_secret, spec.timeout_seconds) == ("s3", 60)
    assert (spec.target.pid, spec.target.worker_thread_id) == (7, 2)
    assert (spec.s3.server_side_encryption, spec.s3.kms_key_id) == ("aws:kms", "alias/heap")
    assert spec.redact is False and "redact" not in manifest["spec"]
    assert spec.series is not None
    assert (spec.series.count, spec.series.interval_seconds, spec.series.sample_allocations) == (
        3,
        30,
        524288,
    )


def test_redact_flag_sets_spec_redact() -> None:
    args = build_parser().parse_args(["capture", "api-0", "--s3", "s3://snaps", "--redact"])
    manifest = build_manifest(args, "shop")
    assert manifest["spec"]["redact"] is True and parse_spec(manifest["spec"]).redact is True


def test_series_flags_need_series() -> None:
    args = build_parser().parse_args(["capture", "api-0", "--s3", "s3://snaps", "--sample-allocations"])
    with pytest.raises(InvalidInput, match="need --series N"):
        build_manifest(args, "shop")


@pytest.mark.parametrize("uri", ["snaps", "s3://", "https://snaps"])
def test_bad_s3_uri(uri: str) -> None:
    with pytest.raises(InvalidInput, match="s3://bucket"):
        parse_s3_uri(uri)


def test_download_keeps_only_verified_bytes(tmp_path: Path) -> None:
    data = b"x" * 3_000_000
    target = tmp_path / "snap.heapsnapshot"
    assert download(io.BytesIO(data), target, hashlib.sha256(data).hexdigest()) == len(data)
    assert target.read_bytes() == data

    other = tmp_path / "bad.heapsnapshot"
    with pytest.raises(StorageError) as info:
        download(io.BytesIO(data), other, "0" * 64)
    assert info.value.reason == "ChecksumMismatch"
    assert list(tmp_path.iterdir()) == [target]


def resource(name: str, phase: str = "Succeeded", uris: tuple[str, ...] = (), **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if uris:
        status["artifact"] = {"uri": uris[-1]}
    if len(uris) > 1:
        status["artifacts"] = [{"uri": u} for u in uris]
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def no_baseline(name: str) -> dict[str, Any]:
    raise AssertionError(f"{name} should not be read")


@pytest.mark.parametrize(
    ("obj", "kind", "sources"),
    [
        (
            resource("s", uris=("s3://b/1", "s3://b/2", "s3://b/3", "s3://b/4")),
            "leaks",
            ["s3://b/1", "s3://b/3", "s3://b/4"],
        ),
        (resource("s", uris=("s3://b/1", "s3://b/2")), "diff", ["s3://b/1", "s3://b/2"]),
        (resource("one", uris=("s3://b/x",)), "summary", ["s3://b/x"]),
    ],
)
def test_analysis_plan_follows_the_operator(obj: dict[str, Any], kind: str, sources: list[str]) -> None:
    assert analysis_plan(obj, no_baseline) == (kind, sources)


def test_analysis_plan_compares_with_compare_to() -> None:
    later = resource("later", uris=("s3://b/later",), compareTo="before")
    plan = analysis_plan(later, lambda name: resource(name, uris=("s3://b/before",)))
    assert plan == ("diff", ["s3://b/before", "s3://b/later"])
    with pytest.raises(InvalidInput, match="compareTo names HeapSnapshot before, which is Failed"):
        analysis_plan(later, lambda name: resource(name, phase="Failed"))


def test_analysis_plan_needs_a_succeeded_resource() -> None:
    with pytest.raises(InvalidInput, match="HeapSnapshot s is Capturing: it has no snapshot"):
        analysis_plan(resource("s", phase="Capturing"), no_baseline)
