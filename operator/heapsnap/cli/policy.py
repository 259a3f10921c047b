"""``kubectl heapsnap policy``: create, list and describe HeapSnapshotPolicies.

kubectl heapsnap policy create api-leaks --selector app=api -c app --s3 s3://diag/prod \\
    --memory-above 80% --schedule '0 3 * * *' --cooldown 6h
kubectl heapsnap policy list [-A]
kubectl heapsnap policy describe api-leaks
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from heapsnap.errors import InvalidInput
from heapsnap.k8s.policy import POLICY_KIND, POLICY_PLURAL, parse_policy
from heapsnap.k8s.types import GROUP, VERSION


def _selector(text: str) -> dict[str, Any]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise InvalidInput(
                f"--selector {text!r}: write key=value pairs separated by commas (app=api,tier=web)."
            )
        labels[key.strip()] = value.strip()
    if not labels:
        raise InvalidInput("--selector is empty; an empty selector would match every pod.")
    return {"matchLabels": labels}


def build_policy(args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    """The HeapSnapshotPolicy manifest the flags describe (checked as the operator checks it)."""
    from heapsnap.cli.kubectl import storage_from_args

    if not args.s3:
        raise InvalidInput("Give --s3 s3://bucket/prefix (or set HEAPSNAP_S3) for where the snapshots go.")
    triggers: list[dict[str, Any]] = []
    for cron in args.schedule or []:
        schedule: dict[str, Any] = {"cron": cron}
        if args.time_zone:
            schedule["timeZone"] = args.time_zone
        triggers.append({"schedule": schedule})
    for above in args.memory_above or []:
        triggers.append({"memory": {"above": above}})
    for growth in args.growth or []:
        by, slash, within = growth.partition("/")
        if not slash:
            raise InvalidInput(f"--growth {growth!r}: write BY/WITHIN, e.g. 30%/1h or 200Mi/30m.")
        triggers.append({"growth": {"by": by, "within": within}})
    if args.restart_after:
        triggers.append({"restart": {"reason": args.restart_reason, "after": args.restart_after}})
    if not triggers:
        raise InvalidInput(
            "Give at least one trigger: --schedule, --memory-above, --growth or --restart-after."
        )
    template: dict[str, Any] = {
        "storage": storage_from_args(args),
        "compression": "none" if args.no_gzip else "gzip",
    }
    if args.series:
        template["series"] = {"count": args.series, "intervalSeconds": args.interval or 60}
    if args.ttl is not None:
        template["ttlSecondsAfterFinished"] = args.ttl
    spec: dict[str, Any] = {
        "selector": _selector(args.selector),
        "triggers": triggers,
        "template": template,
        "cooldown": args.cooldown,
        "maxConcurrent": args.max_concurrent,
        "historyLimit": {"succeeded": args.keep_succeeded, "failed": args.keep_failed},
        "suspend": args.suspend,
    }
    if args.container:
        spec["container"] = args.container
    parse_policy(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": POLICY_KIND,
        "metadata": {"name": args.name, "namespace": namespace},
        "spec": spec,
    }


def cmd_create(args: argparse.Namespace) -> int:
    from heapsnap.cli.kubectl import _api_error, _namespace
    from heapsnap.k8s.api import connect

    if args.dry_run:
        import yaml

        print(yaml.safe_dump(build_policy(args, args.namespace or "default"), sort_keys=False), end="")
        return 0
    api = connect()
    namespace = _namespace(args, api)
    manifest = build_policy(args, namespace)
    try:
        api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, manifest)
    except Exception as error:
        raise _api_error(error) from error
    print(f"heapsnapshotpolicy.{GROUP}/{args.name} created")
    return 0


def _ready(status: dict[str, Any]) -> tuple[str, str]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("reason") or cond.get("status")), str(cond.get("message") or "")
    return "Pending", ""


def _triggers(spec: dict[str, Any]) -> str:
    words = []
    for t in spec.get("triggers") or []:
        if "schedule" in t:
            words.append(f"schedule {t['schedule'].get('cron')}")
        elif "memory" in t:
            words.append(f"memory>{t['memory'].get('above')}")
        elif "growth" in t:
            words.append(f"growth+{t['growth'].get('by')}/{t['growth'].get('within')}")
        elif "restart" in t:
            words.append(
                f"restart {t['restart'].get('reason', 'OOMKilled')}+{t['restart'].get('after', '10m')}"
            )
    return ", ".join(words)


def cmd_list(args: argparse.Namespace) -> int:
    from heapsnap.cli.kubectl import _age, _namespace
    from heapsnap.k8s.api import connect

    api = connect()
    if args.all_namespaces:
        items = api.custom.list_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL)["items"]
    else:
        items = api.custom.list_namespaced_custom_object(
            GROUP, VERSION, _namespace(args, api), POLICY_PLURAL
        )["items"]
    rows = [("NAMESPACE", "NAME", "TRIGGERS", "PODS", "ACTIVE", "CREATED", "LAST", "NEXT SCHEDULE", "STATE")]
    for obj in items:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        counts = status.get("counts") or {}
        last = status.get("lastTriggerTime")
        rows.append(
            (
                meta["namespace"],
                meta["name"],
                _triggers(spec),
                str(status.get("matchedPods", "")),
                str(status.get("active", "")),
                str(counts.get("created", 0)),
                f"{_age(last)} ago" if last else "never",
                status.get("nextScheduleTime") or "",
                _ready(status)[0],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def describe(obj: dict[str, Any]) -> str:
    """What ``policy describe`` prints: the triggers, conditions, counts, pods and captures."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    selector = spec.get("selector") or {}
    lines = [
        f"Name:          {meta['name']}",
        f"Namespace:     {meta['namespace']}",
        f"Selector:      {json.dumps(selector.get('matchLabels') or selector)}",
        f"Container:     {spec.get('container') or '(the only one)'}",
        f"Triggers:      {_triggers(spec)}",
        f"Cooldown:      {spec.get('cooldown')} per pod; maxConcurrent {spec.get('maxConcurrent')}; "
        f"suspend {str(spec.get('suspend', False)).lower()}",
        f"Next schedule: {status.get('nextScheduleTime') or '-'}",
        f"Matched pods:  {status.get('matchedPods', '-')}, captures unfinished: {status.get('active', 0)}",
        "Counts:        "
        + (", ".join(f"{k} {v}" for k, v in sorted((status.get("counts") or {}).items())) or "none yet"),
        "Conditions:",
    ]
    for cond in status.get("conditions") or []:
        lines.append(
            f"  {cond.get('type')}={cond.get('status')} ({cond.get('reason')}): {cond.get('message')}"
        )
    if status.get("lastNotFitting"):
        nf = status["lastNotFitting"]
        lines.append(f"Last capture that did not fit: {nf.get('time')} {nf.get('message')}")
    lines.append("Pods (last trigger):")
    for pod in status.get("pods") or []:
        lines.append(
            f"  {pod.get('pod')}: {pod.get('outcome')} at {pod.get('lastTriggerTime') or '-'} "
            f"({pod.get('trigger')}: {pod.get('reason')})"
        )
    lines.append("Recent HeapSnapshots:")
    for snap in status.get("recent") or []:
        lines.append(
            f"  {snap.get('name')}  {snap.get('phase', '')}  {snap.get('time')}  {snap.get('reason')}"
        )
    return "\n".join(lines)


def cmd_describe(args: argparse.Namespace) -> int:
    from heapsnap.cli.kubectl import _api_error, _namespace
    from heapsnap.k8s.api import connect

    api = connect()
    namespace = _namespace(args, api)
    try:
        obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, args.name)
    except Exception as error:
        raise _api_error(error) from error
    print(describe(dict(obj)))
    return 0


def add_commands(sub: Any) -> None:
    import os

    pol = sub.add_parser("policy", help="HeapSnapshotPolicies: captures that start themselves")
    verbs = pol.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", help="create a HeapSnapshotPolicy")
    create.add_argument("name")
    create.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    create.add_argument("--selector", "-l", required=True, help="pods to watch: key=value[,key=value]")
    create.add_argument("-c", "--container")
    create.add_argument("--schedule", action="append", metavar="CRON", help="e.g. '0 3 * * *' (repeatable)")
    create.add_argument("--time-zone", metavar="TZ", help="IANA time zone of the schedules (default UTC)")
    create.add_argument(
        "--memory-above", action="append", metavar="AMOUNT", help="80%% of the limit, or 1536Mi"
    )
    create.add_argument("--growth", action="append", metavar="BY/WITHIN", help="e.g. 30%%/1h or 200Mi/30m")
    create.add_argument("--restart-after", metavar="DURATION", help="capture the replacement after a restart")
    create.add_argument("--restart-reason", choices=("OOMKilled", "Any"), default="OOMKilled")
    create.add_argument("--cooldown", default="1h", help="per pod (default 1h)")
    create.add_argument("--max-concurrent", type=int, default=1)
    create.add_argument("--keep-succeeded", type=int, default=10)
    create.add_argument("--keep-failed", type=int, default=3)
    create.add_argument("--suspend", action="store_true")
    create.add_argument(
        "--s3", default=os.environ.get("HEAPSNAP_S3"), help="s3://bucket/prefix (or $HEAPSNAP_S3)"
    )
    create.add_argument("--endpoint", help="S3-compatible endpoint URL")
    create.add_argument("--region")
    create.add_argument("--path-style", action="store_true", help="path-style S3 addressing")
    create.add_argument("--credentials-secret", help="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    create.add_argument("--sse", choices=("AES256", "aws:kms"))
    create.add_argument("--sse-kms-key-id", metavar="KEY")
    create.add_argument("--no-gzip", action="store_true")
    create.add_argument("--series", type=int, metavar="N", help="N snapshots per capture")
    create.add_argument("--interval", type=int, metavar="SECONDS", help="between the snapshots of a series")
    create.add_argument("--ttl", type=int, metavar="SECONDS", help="ttlSecondsAfterFinished of each capture")
    create.add_argument("--dry-run", action="store_true", help="print the manifest instead of creating it")
    create.set_defaults(func=cmd_create)

    lst = verbs.add_parser("list", help="list HeapSnapshotPolicies")
    lst.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    lst.add_argument("-A", "--all-namespaces", action="store_true")
    lst.set_defaults(func=cmd_list)

    desc = verbs.add_parser("describe", help="a policy's triggers, conditions, pods and captures")
    desc.add_argument("name")
    desc.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    desc.set_defaults(func=cmd_describe)
