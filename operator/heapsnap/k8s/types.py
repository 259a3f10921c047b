"""HeapSnapshot spec, parsed from the custom resource into typed values.

The API server already validates the spec against the CRD schema; parsing here checks
again so that a resource created before a schema change, or a fake in a test, fails
with an ``InvalidInput`` that names the field rather than a ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from heapsnap.errors import InvalidInput

GROUP = "heapsnap.dev"
VERSION = "v1alpha1"
PLURAL = "heapsnapshots"
KIND = "HeapSnapshot"

Method = Literal["auto", "inspector", "signal"]
Preflight = Literal["enforce", "warn", "skip"]
OnMultiple = Literal["Oldest", "Fail"]

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_CREDENTIAL_KEYS = ("AWS_SESSION_TOKEN",)


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Mapping[str, Any], ...] = ()

    def to_query(self) -> str:
        """The selector as the ``labelSelector`` query parameter of a list call."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for expr in self.match_expressions:
            key, op, values = expr["key"], expr["operator"], expr.get("values") or []
            if op == "In":
                parts.append(f"{key} in ({','.join(values)})")
            elif op == "NotIn":
                parts.append(f"{key} notin ({','.join(values)})")
            elif op == "Exists":
                parts.append(key)
            elif op == "DoesNotExist":
                parts.append(f"!{key}")
        return ",".join(parts)


@dataclass(frozen=True)
class TargetSpec:
    pod_name: str | None
    selector: LabelSelector | None
    on_multiple: OnMultiple
    container: str | None
    pid: int | None
    command_contains: str | None
    worker_thread_id: int | None = None


@dataclass(frozen=True)
class S3Spec:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    credentials_secret: str | None = None
    server_side_encryption: str | None = None
    kms_key_id: str | None = None


#: spec.series.samplingIntervalBytes' default: the engine's (``_sampling.DEFAULT_INTERVAL``),
#: not imported so that this module stays free of the engine.
SAMPLING_INTERVAL = 512 * 1024


@dataclass(frozen=True)
class SeriesSpec:
    count: int
    interval_seconds: int = 60
    # Bytes between allocation samples; None: no sampling.
    sample_allocations: int | None = None


@dataclass(frozen=True)
class HeapSnapshotSpec:
    target: TargetSpec
    s3: S3Spec
    method: Method = "auto"
    inspector_port: int = 9229
    transfer: Literal["auto", "stream", "tempfile"] = "auto"
    compression: Literal["gzip", "none"] = "gzip"
    # Store the snapshot with its string contents replaced (heapsnap.analysis.redact).
    redact: bool = False
    timeout_seconds: int = 900
    ttl_seconds_after_finished: int | None = None
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    preflight: Preflight = "enforce"
    series: SeriesSpec | None = None
    compare_to: str | None = None


def _get(d: Mapping[str, Any], key: str, path: str, kind: type, default: Any = None) -> Any:
    value = d.get(key, default)
    if value is None:
        return default
    # bool is an int in Python; a boolean where a number belongs is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInput(
            f"{path}.{key} must be a {kind.__name__}, got {value!r}; fix the HeapSnapshot spec."
        )
    return value


def _choice(d: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...], default: str) -> Any:
    value = _get(d, key, path, str, default)
    if value not in allowed:
        raise InvalidInput(f"{path}.{key} is {value!r}; use one of {', '.join(allowed)}.")
    return value


def _int_range(
    d: Mapping[str, Any], key: str, path: str, lo: int, hi: int, default: int | None
) -> int | None:
    value: int | None = _get(d, key, path, int, default)
    if value is not None and not lo <= value <= hi:
        raise InvalidInput(f"{path}.{key} is {value}; use a number from {lo} to {hi}.")
    return value


def parse_target(d: Mapping[str, Any]) -> TargetSpec:
    path = "spec.target"
    pod_name = _get(d, "podName", path, str)
    raw_selector = _get(d, "selector", path, dict)
    if (pod_name is None) == (raw_selector is None):
        raise InvalidInput("Set exactly one of spec.target.podName or spec.target.selector.")
    selector = None
    if raw_selector is not None:
        labels = _get(raw_selector, "matchLabels", f"{path}.selector", dict, {})
        exprs = _get(raw_selector, "matchExpressions", f"{path}.selector", list, [])
        if not labels and not exprs:
            raise InvalidInput(
                "spec.target.selector needs matchLabels or matchExpressions; an empty selector "
                "would match every pod."
            )
        selector = LabelSelector(dict(labels), tuple(exprs))
    process = _get(d, "process", path, dict, {})
    pid = _int_range(process, "pid", f"{path}.process", 1, 2**31 - 1, None)
    contains = _get(process, "commandContains", f"{path}.process", str)
    if pid is not None and contains is not None:
        raise InvalidInput(
            "Set at most one of spec.target.process.pid or spec.target.process.commandContains."
        )
    return TargetSpec(
        pod_name=pod_name,
        selector=selector,
        on_multiple=_choice(d, "onMultiple", path, ("Oldest", "Fail"), "Oldest"),
        container=_get(d, "container", path, str),
        pid=pid,
        command_contains=contains,
        worker_thread_id=_int_range(process, "workerThreadId", f"{path}.process", 1, 2**31 - 1, None),
    )


def parse_s3(d: Mapping[str, Any]) -> S3Spec:
    path = "spec.storage.s3"
    bucket = _get(d, "bucket", path, str)
    if not bucket:
        raise InvalidInput("spec.storage.s3.bucket is required: name the bucket that receives the snapshot.")
    if bucket.startswith("s3://") or "/" in bucket:
        raise InvalidInput(
            f"spec.storage.s3.bucket is {bucket!r}: give a bare bucket name and put folders in "
            "spec.storage.s3.prefix."
        )
    endpoint = _get(d, "endpoint", path, str)
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise InvalidInput(
            f"spec.storage.s3.endpoint is {endpoint!r}; it must start with http:// or https://."
        )
    encryption = _get(d, "serverSideEncryption", path, str)
    kms_key_id = _get(d, "kmsKeyId", path, str)
    if kms_key_id is not None and encryption != "aws:kms":
        raise InvalidInput(
            f"spec.storage.s3.kmsKeyId is set but spec.storage.s3.serverSideEncryption is "
            f"{encryption or 'unset'}: set serverSideEncryption to aws:kms, or remove kmsKeyId."
        )
    return S3Spec(
        bucket=bucket,
        prefix=_get(d, "prefix", path, str, "").strip("/"),
        endpoint=endpoint or None,
        region=_get(d, "region", path, str),
        force_path_style=_get(d, "forcePathStyle", path, bool, False),
        credentials_secret=_get(d, "credentialsSecret", path, str),
        server_side_encryption=encryption,
        kms_key_id=kms_key_id,
    )


def parse_spec(spec: Mapping[str, Any]) -> HeapSnapshotSpec:
    """Parse ``spec`` of a HeapSnapshot; raise ``InvalidInput`` naming the bad field."""
    target = _get(spec, "target", "spec", dict)
    if target is None:
        raise InvalidInput("spec.target is required: name the pod (podName or selector) to capture.")
    storage = _get(spec, "storage", "spec", dict, {})
    s3 = _get(storage, "s3", "spec.storage", dict)
    if s3 is None:
        raise InvalidInput("spec.storage.s3 is required: give the bucket that receives the snapshot.")
    raw_series = _get(spec, "series", "spec", dict)
    series = None
    if raw_series is not None:
        count = _int_range(raw_series, "count", "spec.series", 2, 10, None)
        if count is None:
            raise InvalidInput("spec.series.count is required: how many snapshots to take (2 to 10).")
        interval = _int_range(raw_series, "intervalSeconds", "spec.series", 0, 3600, 60)
        sample = _get(raw_series, "sampleAllocations", "spec.series", bool, False)
        every = _int_range(raw_series, "samplingIntervalBytes", "spec.series", 1024, 1 << 30, None)
        if every is not None and not sample:
            raise InvalidInput(
                "spec.series.samplingIntervalBytes is set but spec.series.sampleAllocations is not: "
                "set sampleAllocations: true, or remove samplingIntervalBytes."
            )
        sampling = (every or SAMPLING_INTERVAL) if sample else None
        series = SeriesSpec(count, 60 if interval is None else interval, sampling)
    method = _choice(spec, "method", "spec", ("auto", "inspector", "signal"), "auto")
    parsed_target = parse_target(target)
    if parsed_target.worker_thread_id is not None and method == "signal":
        raise InvalidInput(
            "spec.target.process.workerThreadId needs the inspector (the snapshot signal captures "
            "the main thread only); use method inspector or auto."
        )
    if series is not None and method == "signal":
        raise InvalidInput(
            "spec.series needs the inspector (object ids reset between signal snapshots); "
            "use method inspector or auto."
        )
    return HeapSnapshotSpec(
        target=parsed_target,
        s3=parse_s3(s3),
        method=method,
        inspector_port=_int_range(spec, "inspectorPort", "spec", 1, 65535, 9229) or 9229,
        transfer=_choice(spec, "transfer", "spec", ("auto", "stream", "tempfile"), "auto"),
        compression=_choice(spec, "compression", "spec", ("gzip", "none"), "gzip"),
        redact=_get(spec, "redact", "spec", bool, False),
        timeout_seconds=_int_range(spec, "timeoutSeconds", "spec", 1, 86400, 900) or 900,
        ttl_seconds_after_finished=_int_range(spec, "ttlSecondsAfterFinished", "spec", 0, 2**31 - 1, None),
        deletion_policy=_choice(spec, "deletionPolicy", "spec", ("Retain", "Delete"), "Retain"),
        preflight=_choice(spec, "preflight", "spec", ("enforce", "warn", "skip"), "enforce"),
        series=series,
        compare_to=_get(spec, "compareTo", "spec", str),
    )


def object_key(
    s3: S3Spec, namespace: str, name: str, uid: str, *, gzip: bool, index: int | None = None
) -> str:
    """The deterministic S3 key of a resource's artifact, so a restarted operator can find it.

    Snapshots of a series carry their 1-based ``index``.
    """
    suffix = ".heapsnapshot.gz" if gzip else ".heapsnapshot"
    stem = f"{name}-{uid}" if index is None else f"{name}-{uid}-{index}"
    parts = [p for p in (s3.prefix, namespace, f"{stem}{suffix}") if p]
    return "/".join(parts)


def object_keys(spec: HeapSnapshotSpec, namespace: str, name: str, uid: str) -> list[str]:
    """Every key the resource may write: one, or one per snapshot of its series."""
    gzip = spec.compression == "gzip"
    if spec.series is None:
        return [object_key(spec.s3, namespace, name, uid, gzip=gzip)]
    return [
        object_key(spec.s3, namespace, name, uid, gzip=gzip, index=i) for i in range(1, spec.series.count + 1)
    ]
