"""Spec parsing: one table of bad specs, each must name the field to fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from heapsnap.controller.backends import s3_config
from heapsnap.engine._sampling import DEFAULT_INTERVAL
from heapsnap.errors import InvalidInput
from heapsnap.k8s.types import SAMPLING_INTERVAL, LabelSelector, object_key, parse_spec

GOOD: dict[str, Any] = {
    "target": {"podName": "api-0"},
    "storage": {"s3": {"bucket": "snaps", "prefix": "/heap/"}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    node = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


def test_defaults() -> None:
    spec = parse_spec(GOOD)
    assert spec.target.pod_name == "api-0"
    assert (spec.method, spec.inspector_port, spec.compression) == ("auto", 9229, "gzip")
    assert spec.transfer == "auto"
    assert (spec.deletion_policy, spec.preflight, spec.timeout_seconds) == ("Retain", "enforce", 900)
    assert spec.s3.prefix == "heap"
    assert spec.target.worker_thread_id is None
    assert parse_spec(with_("target.process", {"workerThreadId": 3})).target.worker_thread_id == 3
    assert spec.redact is False and parse_spec(with_("redact", True)).redact is True


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (with_("target", None), "spec.target"),
        (with_("target.selector", {"matchLabels": {"app": "x"}}), "spec.target.podName"),
        (with_("target", {"selector": {}}), "spec.target.selector"),
        (with_("target.process", {"pid": 1, "commandContains": "x"}), "spec.target.process.pid"),
        (with_("target.process", {"pid": 0}), "spec.target.process.pid"),
        (with_("target.onMultiple", "Newest"), "spec.target.onMultiple"),
        (with_("method", "gdb"), "spec.method"),
        (with_("inspectorPort", 70000), "spec.inspectorPort"),
        (with_("inspectorPort", True), "spec.inspectorPort"),
        (with_("transfer", "scp"), "spec.transfer"),
        (with_("storage", {}), "spec.storage.s3"),
        (with_("storage.s3.bucket", "s3://snaps"), "spec.storage.s3.bucket"),
        (with_("storage.s3.bucket", None), "spec.storage.s3.bucket"),
        (with_("storage.s3.endpoint", "minio:9000"), "spec.storage.s3.endpoint"),
        (with_("storage.s3.kmsKeyId", "alias/snaps"), "spec.storage.s3.kmsKeyId"),
        (
            with_("storage.s3", {"bucket": "b", "serverSideEncryption": "AES256", "kmsKeyId": "k"}),
            "set serverSideEncryption to aws:kms",
        ),
        (with_("compression", "zstd"), "spec.compression"),
        (with_("redact", "yes"), "spec.redact"),
        (with_("deletionPolicy", "Orphan"), "spec.deletionPolicy"),
        (with_("timeoutSeconds", 0), "spec.timeoutSeconds"),
        (with_("series", {"count": 1}), "spec.series.count"),
        (with_("series", {"intervalSeconds": 5}), "spec.series.count"),
        ({**with_("series", {"count": 3}), "method": "signal"}, "spec.series"),
        (with_("series", {"count": 3, "samplingIntervalBytes": 4096}), "spec.series.sampleAllocations"),
        (
            with_("series", {"count": 3, "sampleAllocations": True, "samplingIntervalBytes": 100}),
            "samplingIntervalBytes",
        ),
        (with_("target.process", {"workerThreadId": 0}), "spec.target.process.workerThreadId"),
        (
            {**with_("target.process", {"workerThreadId": 2}), "method": "signal"},
            "spec.target.process.workerThreadId",
        ),
    ],
)
def test_bad_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_spec(spec)
    assert field in info.value.message
    assert info.value.reason == "InvalidSpec"


def test_allocation_sampling_in_a_series() -> None:
    assert parse_spec(with_("series", {"count": 3})).series.sample_allocations is None  # type: ignore[union-attr]
    sampled = parse_spec(with_("series", {"count": 3, "sampleAllocations": True})).series
    assert sampled is not None and sampled.sample_allocations == SAMPLING_INTERVAL == DEFAULT_INTERVAL
    finer = {"count": 3, "sampleAllocations": True, "samplingIntervalBytes": 65536}
    assert parse_spec(with_("series", finer)).series.sample_allocations == 65536  # type: ignore[union-attr]


def test_a_kms_key_reaches_the_s3_config() -> None:
    spec = parse_spec(
        with_("storage.s3", {"bucket": "b", "serverSideEncryption": "aws:kms", "kmsKeyId": "alias/k"})
    )
    config = s3_config(spec, {})
    assert (config.server_side_encryption, config.kms_key_id) == ("aws:kms", "alias/k")


def test_selector_query() -> None:
    selector = LabelSelector(
        {"app": "api", "tier": "web"},
        (
            {"key": "env", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ),
    )
    assert selector.to_query() == "app=api,tier=web,env in (a,b),!canary"


def test_object_key_is_deterministic() -> None:
    s3 = parse_spec(GOOD).s3
    assert object_key(s3, "shop", "snap", "u-1", gzip=True) == "heap/shop/snap-u-1.heapsnapshot.gz"
    bare = parse_spec(with_("storage.s3.prefix", None)).s3
    assert object_key(bare, "shop", "snap", "u-1", gzip=False) == "shop/snap-u-1.heapsnapshot"
