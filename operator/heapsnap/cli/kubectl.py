"""``kubectl heapsnap``: create HeapSnapshots, follow them, fetch and list their artifacts.

kubectl heapsnap capture POD [-c CONTAINER] --s3 s3://bucket/prefix [--wait]
kubectl heapsnap get NAME -o FILE        # download, verifying sha256
kubectl heapsnap list [-A]
kubectl heapsnap analyze NAME [--html report.html]   # leaks, diff or summary, here
kubectl heapsnap policy create|list|describe         # HeapSnapshotPolicies
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from heapsnap._private import private_open
from heapsnap.cli import exit_after
from heapsnap.cli._signals import Stopped
from heapsnap.errors import HeapsnapError, InvalidInput, StorageError
from heapsnap.k8s.api import ApiConnection, connect
from heapsnap.k8s.types import GROUP, KIND, PLURAL, VERSION

TERMINAL = ("Succeeded", "Failed")


def _namespace(args: argparse.Namespace, api: ApiConnection) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        from kubernetes import config

        _, current = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        return str((current.get("context") or {}).get("namespace") or "default")
    except Exception:
        return "default"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise InvalidInput(f"--s3 {uri!r} is not an S3 URI; write s3://bucket or s3://bucket/prefix.")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def storage_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """spec.storage from --s3 and the S3 flags (also used by ``policy create``)."""
    bucket, prefix = parse_s3_uri(args.s3)
    s3: dict[str, Any] = {"bucket": bucket}
    if prefix:
        s3["prefix"] = prefix
    for key, value in (
        ("endpoint", args.endpoint),
        ("region", args.region),
        ("credentialsSecret", args.credentials_secret),
        ("serverSideEncryption", args.sse or ("aws:kms" if args.sse_kms_key_id else None)),
        ("kmsKeyId", args.sse_kms_key_id),
    ):
        if value:
            s3[key] = value
    if args.path_style:
        s3["forcePathStyle"] = True
    return {"s3": s3}


def build_manifest(args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    target: dict[str, Any] = {"podName": args.pod}
    if args.container:
        target["container"] = args.container
    process: dict[str, Any] = {}
    if args.pid:
        process["pid"] = args.pid
    if args.worker:
        process["workerThreadId"] = args.worker
    if process:
        target["process"] = process
    spec: dict[str, Any] = {
        "target": target,
        "method": args.method,
        "storage": storage_from_args(args),
        "compression": "none" if args.no_gzip else "gzip",
        "preflight": args.preflight,
    }
    if args.redact:
        spec["redact"] = True
    if args.timeout:
        spec["timeoutSeconds"] = args.timeout
    if args.series is not None:
        series: dict[str, Any] = {"count": args.series}
        if args.interval is not None:
            series["intervalSeconds"] = args.interval
        if args.sample_allocations:
            series["sampleAllocations"] = True
        spec["series"] = series
    elif args.interval is not None or args.sample_allocations:
        raise InvalidInput("--interval and --sample-allocations need --series N.")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"generateName": f"{args.pod[:50]}-", "namespace": namespace},
        "spec": spec,
    }


def _api_error(error: Exception) -> HeapsnapError:
    body = getattr(error, "body", None) or str(error)
    try:
        import json

        body = json.loads(body).get("message", body)
    except (ValueError, TypeError, AttributeError):
        pass
    return InvalidInput(f"The API server refused: {body}")


def _describe(status: dict[str, Any]) -> str:
    progress = status.get("progress") or {}
    step = status.get("step") or "pending"
    parts = [status.get("phase") or "Pending", step]
    if progress.get("percent") is not None and step == "generating":
        parts.append(f"{progress['percent']:.0f}%")
    if progress.get("bytesSent"):
        parts.append(f"{progress['bytesSent'] / 1048576:.1f} MiB sent")
    return " · ".join(parts)


def wait_for(
    api: ApiConnection, namespace: str, name: str, timeout: float, out: Any = sys.stderr
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = obj.get("status") or {}
        line = _describe(status)
        if line != last:
            print(f"{name}: {line}", file=out)
            last = line
        if status.get("phase") in TERMINAL:
            return dict(obj)
        if time.monotonic() > deadline:
            raise HeapsnapError(
                f"{name} did not finish within {timeout:g} s; follow it with kubectl get hsnap {name}."
            )
        time.sleep(0.5)


def cmd_capture(args: argparse.Namespace) -> int:
    api = connect()
    namespace = _namespace(args, api)
    manifest = build_manifest(args, namespace)
    try:
        created = api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except Exception as error:  # kubernetes.client.ApiException carries the API server's message
        raise _api_error(error) from error
    name = created["metadata"]["name"]
    print(f"heapsnapshot.{GROUP}/{name} created")
    if not args.wait:
        return 0
    obj = wait_for(api, namespace, name, float(args.timeout or 900) + 60)
    status = obj.get("status") or {}
    if status.get("phase") != "Succeeded":
        failure = status.get("failure") or {}
        raise HeapsnapError(f"{name} failed: {failure.get('reason', 'Failed')}: {failure.get('message', '')}")
    artifact = status.get("artifact") or {}
    print(f"{artifact.get('uri')}  {artifact.get('sizeBytes')} bytes  sha256 {artifact.get('sha256')}")
    return 0


def _credentials(api: ApiConnection, namespace: str, spec: Mapping[str, Any]) -> dict[str, str]:
    """The resource's credentials Secret, read as the operator reads it; nothing when
    AWS_ACCESS_KEY_ID is set here (or the resource names no Secret)."""
    from heapsnap.k8s.objects import decode_credentials
    from heapsnap.k8s.types import parse_spec

    secret = parse_spec(spec).s3.credentials_secret
    if not secret or os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    try:
        data = api.core.read_namespaced_secret(secret, namespace).data or {}
    except Exception as error:
        raise InvalidInput(
            f"Cannot read Secret {namespace}/{secret} for the S3 credentials ({error}); set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in your environment instead."
        ) from None
    return decode_credentials(namespace, secret, data)


def _s3_client(api: ApiConnection, namespace: str, spec: dict[str, Any]) -> Any:
    """A client for the resource's bucket, with the resource's credentials."""
    from heapsnap.controller.backends import s3_config
    from heapsnap.k8s.types import parse_spec
    from heapsnap.sinks.s3 import make_client

    return make_client(s3_config(parse_spec(spec), _credentials(api, namespace, spec)))


def _resource(api: ApiConnection, namespace: str, name: str) -> dict[str, Any]:
    try:
        return dict(api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    except Exception as error:
        raise _api_error(error) from error


def analysis_plan(
    obj: Mapping[str, Any], baseline: Callable[[str], Mapping[str, Any]]
) -> tuple[str, list[str]]:
    """The analysis the operator runs on the resource, and its ``s3://`` sources: leaks
    across a series' first, middle and last snapshots (diff for two), the comparison with
    ``spec.compareTo``'s snapshot, or else the summary of the one snapshot."""
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    uris = [a["uri"] for a in status.get("artifacts") or []] or [(status.get("artifact") or {}).get("uri")]
    if status.get("phase") != "Succeeded" or not all(uris):
        raise InvalidInput(
            f"HeapSnapshot {name} is {status.get('phase') or 'Pending'}: it has no snapshot to analyse yet."
        )
    if len(uris) >= 3:
        return "leaks", [uris[0], uris[len(uris) // 2], uris[-1]]
    if len(uris) == 2:
        return "diff", uris
    other = (obj.get("spec") or {}).get("compareTo")
    if other:
        base = baseline(other).get("status") or {}
        base_uri = (base.get("artifact") or {}).get("uri")
        if base.get("phase") != "Succeeded" or not base_uri:
            raise InvalidInput(
                f"spec.compareTo names HeapSnapshot {other}, which is {base.get('phase') or 'Pending'}: "
                "it has no snapshot to compare with."
            )
        return "diff", [base_uri, uris[0]]
    return "summary", uris


def cmd_analyze(args: argparse.Namespace) -> int:
    from heapsnap.cli import analyze
    from heapsnap.k8s.types import parse_spec

    api = connect()
    namespace = _namespace(args, api)
    obj = _resource(api, namespace, args.name)
    kind, sources = analysis_plan(obj, lambda other: _resource(api, namespace, other))
    spec = obj.get("spec") or {}
    # The analysis reads s3:// through boto3's standard chain: the Secret's keys go there.
    os.environ.update(_credentials(api, namespace, spec))
    s3 = parse_spec(spec).s3
    options = argparse.Namespace(
        json=args.json,
        html=args.html,
        top=args.top,
        all=args.all,
        fast=False,
        s3_endpoint=s3.endpoint,
        s3_region=s3.region,
        s3_path_style=s3.force_path_style,
    )
    fields = {"summary": ["file"], "diff": ["base", "current"], "leaks": ["base", "target", "final"]}[kind]
    for field, source in zip(fields, sources, strict=True):
        setattr(options, field, source)
    if not args.json:
        print(f"HeapSnapshot {namespace}/{args.name}: {kind} of {', '.join(sources)}\n")
    code = analyze.run(kind, options)
    sampled = (obj.get("status") or {}).get("allocations")
    if sampled and not args.json:
        print(
            f"\nAllocations sampled during the series ({sampled.get('seconds', 0):.0f} s), alive at its end:"
        )
        for site in sampled.get("sites") or []:
            where = f"{site['url']}:{site['line']}:{site['column']}" if site.get("url") else "(native or V8)"
            print(f"  {site['liveBytes'] / 1048576:10,.1f} MiB  {site['function']} ({where})")
    return code


def download(body: Any, target: Path, expected_sha256: str) -> int:
    """Stream ``body`` into ``target`` through a temp file; keep it only if the digest matches."""
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.part")
    size = 0
    try:
        with private_open(partial) as out:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != expected_sha256:
            raise StorageError(
                f"The downloaded object's sha256 is {digest.hexdigest()}, not {expected_sha256} as the "
                "HeapSnapshot recorded; the object was changed or corrupted. Nothing was written.",
                reason="ChecksumMismatch",
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return size


def cmd_get(args: argparse.Namespace) -> int:
    api = connect()
    namespace = _namespace(args, api)
    obj = _resource(api, namespace, args.name)
    status = obj.get("status") or {}
    artifact = status.get("artifact") or {}
    if status.get("phase") != "Succeeded" or not artifact.get("uri"):
        raise InvalidInput(
            f"HeapSnapshot {args.name} is {status.get('phase') or 'Pending'}: it has no artifact yet."
        )
    bucket, key = parse_s3_uri(artifact["uri"])
    client = _s3_client(api, namespace, obj.get("spec") or {})
    response = client.get_object(Bucket=bucket, Key=key)
    target = Path(args.output)
    size = download(response["Body"], target, artifact["sha256"])
    print(f"{target}: {size} bytes, sha256 verified")
    return 0


def _age(created: str | None) -> str:
    if not created:
        return "?"
    then = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    for unit, width in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= width:
            return f"{seconds // width}{unit}"
    return f"{seconds}s"


def cmd_list(args: argparse.Namespace) -> int:
    api = connect()
    if args.all_namespaces:
        items = api.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    else:
        items = api.custom.list_namespaced_custom_object(GROUP, VERSION, _namespace(args, api), PLURAL)[
            "items"
        ]
    rows = [("NAMESPACE", "NAME", "POD", "PHASE", "SIZE", "POLICY", "AGE")]
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        pod = (
            (status.get("target") or {}).get("pod")
            or (spec.get("target") or {}).get("podName")
            or "<selector>"
        )
        size = (status.get("artifact") or {}).get("sizeBytes")
        rows.append(
            (
                meta["namespace"],
                meta["name"],
                pod,
                status.get("phase") or "Pending",
                f"{size / 1048576:.1f}Mi" if size else "",
                (meta.get("annotations") or {}).get(f"{GROUP}/policy") or "",
                _age(meta.get("creationTimestamp")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl heapsnap", description="Heap snapshots of Node.js pods.")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cap = sub.add_parser("capture", help="create a HeapSnapshot of a pod")
    cap.add_argument("pod")
    cap.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    cap.add_argument("-c", "--container")
    cap.add_argument(
        "--pid", type=int, help="process id inside the container (default: the main node process)"
    )
    cap.add_argument("--worker", type=int, metavar="THREAD_ID", help="a worker thread (its threadId)")
    cap.add_argument("--method", choices=("auto", "inspector", "signal"), default="auto")
    cap.add_argument(
        "--s3", default=os.environ.get("HEAPSNAP_S3"), help="s3://bucket/prefix (or $HEAPSNAP_S3)"
    )
    cap.add_argument("--endpoint", help="S3-compatible endpoint URL")
    cap.add_argument("--region")
    cap.add_argument("--path-style", action="store_true", help="path-style S3 addressing")
    cap.add_argument("--credentials-secret", help="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    cap.add_argument("--sse", choices=("AES256", "aws:kms"), help="spec.storage.s3.serverSideEncryption")
    cap.add_argument(
        "--sse-kms-key-id", metavar="KEY", help="spec.storage.s3.kmsKeyId (implies --sse aws:kms)"
    )
    cap.add_argument("--no-gzip", action="store_true")
    cap.add_argument(
        "--redact", action="store_true", help="spec.redact: store it without the contents of its strings"
    )
    cap.add_argument("--preflight", choices=("enforce", "warn", "skip"), default="enforce")
    cap.add_argument("--timeout", type=int, help="spec.timeoutSeconds")
    cap.add_argument("--series", type=int, metavar="N", help="spec.series.count: N snapshots in one session")
    cap.add_argument("--interval", type=int, metavar="SECONDS", help="spec.series.intervalSeconds")
    cap.add_argument(
        "--sample-allocations", action="store_true", help="spec.series.sampleAllocations (with --series)"
    )
    cap.add_argument("--wait", action="store_true", help="follow progress until it finishes")
    cap.set_defaults(func=cmd_capture)

    ana = sub.add_parser(
        "analyze",
        help="leak suspects of a series, the comparison with compareTo, or the summary, computed here",
        description="What the operator's analysis shows, with retained sizes, the retainer paths and "
        "an HTML report, computed on this machine: for snapshots too large to analyse in the "
        "operator, or for the report.",
    )
    ana.add_argument("name")
    ana.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    ana.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ana.add_argument(
        "--html", metavar="REPORT.html", type=Path, help="also write a self-contained HTML report"
    )
    ana.add_argument("--top", type=int, default=25, metavar="N", help="rows to show (default 25)")
    ana.add_argument("--all", action="store_true", help="leak suspects: include V8's own objects")
    ana.set_defaults(func=cmd_analyze)

    get = sub.add_parser("get", help="download a HeapSnapshot's artifact, verifying its sha256")
    get.add_argument("name")
    get.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    get.add_argument("-o", "--output", required=True, help="file to write")
    get.set_defaults(func=cmd_get)

    lst = sub.add_parser("list", help="list HeapSnapshots")
    lst.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    lst.add_argument("-A", "--all-namespaces", action="store_true")
    lst.set_defaults(func=cmd_list)

    from heapsnap.cli import policy

    policy.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "capture" and not args.s3:
            raise InvalidInput(
                "Give --s3 s3://bucket/prefix (or set HEAPSNAP_S3) for where the snapshot goes."
            )
        code: int = args.func(args)
    except HeapsnapError as error:
        print(f"kubectl-heapsnap: error: {error}", file=sys.stderr)
        return 1
    except Stopped as stopped:
        print(f"kubectl-heapsnap: stopped by {stopped.name}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        return 130
    return code


def entry() -> NoReturn:
    """The ``kubectl-heapsnap`` console script."""
    exit_after(main)


if __name__ == "__main__":
    entry()
