"""Subcommands of `heapsnap` that read snapshots: summary, diff, leaks, inspect, retainers.

FILE is a local path (gzip is detected by its magic) or an ``s3://bucket/key`` URI.
Each prints a table, or JSON with ``--json``, and can write a self-contained HTML
report with ``--html``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heapsnap.errors import InvalidInput, StorageError

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    output = common.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--html", metavar="REPORT.html", type=Path, help="also write a self-contained HTML report"
    )
    output.add_argument("--top", type=int, default=25, metavar="N", help="rows to show (default 25)")
    s3 = common.add_argument_group("s3:// sources (credentials from the standard AWS chain)")
    s3.add_argument("--s3-endpoint", metavar="URL", help="endpoint of an S3-compatible server")
    s3.add_argument("--s3-region", metavar="REGION")
    s3.add_argument("--s3-path-style", action="store_true", help="address buckets by path, not host name")

    summary = sub.add_parser(
        "summary",
        parents=[common],
        help="classes by count, shallow and retained size",
        description="Summary of one snapshot, grouped by constructor as in Chrome DevTools.",
    )
    summary.add_argument("file", metavar="FILE", help="snapshot path or s3://bucket/key")
    summary.add_argument(
        "--fast", action="store_true", help="stream the file once, without retained sizes (constant memory)"
    )
    summary.set_defaults(func=_summary)

    diff = sub.add_parser(
        "diff",
        parents=[common],
        help="what changed between two snapshots of one process",
        description="Comparison of two snapshots: new, deleted and delta per constructor.",
    )
    diff.add_argument("base", metavar="BASE")
    diff.add_argument("current", metavar="CURRENT")
    diff.set_defaults(func=_diff)

    leaks = sub.add_parser(
        "leaks",
        parents=[common],
        help="objects allocated between two snapshots that survive a third",
        description="Leak suspects: objects new in TARGET (not in BASE) still alive in FINAL, "
        "by constructor, "
        "each with the shortest retainer path of one of them.",
    )
    leaks.add_argument("base", metavar="BASE")
    leaks.add_argument("target", metavar="TARGET")
    leaks.add_argument("final", metavar="FINAL")
    leaks.add_argument("--all", action="store_true", help="include V8's own objects (code, hidden, shapes)")
    leaks.set_defaults(func=_leaks)

    inspect = sub.add_parser(
        "inspect",
        parents=[common],
        help="duplicated strings, growing collections, fan-out, added globals",
        description="The leak heuristics: duplicated strings, top fan-out objects and globals the "
        "program added in the last FILE; with 2 or more FILEs (a series of one process, oldest "
        "first), the Maps, Sets, Arrays and Objects whose element count grew in every snapshot.",
    )
    inspect.add_argument("files", metavar="FILE", nargs="+")
    inspect.set_defaults(func=_inspect)

    retainers = sub.add_parser(
        "retainers",
        parents=[common],
        help="what holds an object, and its shortest path from the roots",
        description="Retainers of one object and its shortest retainer path from the GC roots.",
    )
    retainers.add_argument("file", metavar="FILE")
    retainers.add_argument(
        "--node", required=True, metavar="ID", help="object id (as DevTools shows it, @ optional)"
    )
    retainers.set_defaults(func=_retainers)


def run(kind: str, args: argparse.Namespace) -> int:
    """``heapsnap summary|diff|leaks`` with ``args`` as its parser would have made them."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "summary": _summary,
        "diff": _diff,
        "leaks": _leaks,
    }
    return runners[kind](args)


def _options(args: argparse.Namespace) -> Any:
    from heapsnap.analysis.s3 import S3Options

    return S3Options(endpoint_url=args.s3_endpoint, region=args.s3_region, path_style=args.s3_path_style)


def _load(args: argparse.Namespace, source: str, *, edges: bool = True) -> Any:
    from heapsnap.analysis.reader import read_snapshot

    if not source.startswith("s3://") and not Path(source).exists():
        raise InvalidInput(
            f"snapshot {source!r} does not exist: give the path of a .heapsnapshot or an s3:// URI"
        )
    try:
        return read_snapshot(source, s3=_options(args), edges=edges)
    except StorageError:
        raise
    except MemoryError:
        raise InvalidInput(f"not enough memory to read {source}: use 'heapsnap summary --fast'") from None


def _top(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InvalidInput(f"--top must be at least 1, not {args.top}")
    top: int = args.top
    return top


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str, html: str | None) -> int:
    if args.html is not None and html is not None:
        _write_atomically(args.html, html)
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)
        if args.html is not None:
            print(f"\nHTML report: {args.html}")
    return 0


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidInput(f"--html {str(path)!r}: directory {str(directory)!r} does not exist")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _summary(args: argparse.Namespace) -> int:
    top = _top(args)
    if args.fast:
        return _fast_summary(args, top)
    from heapsnap.analysis import report
    from heapsnap.analysis.render import class_table, human_size
    from heapsnap.analysis.views import analyze

    analysis = analyze(_load(args, args.file))
    analysis.paths  # noqa: B018 - distances for the table
    rows = analysis.summary()
    snapshot = analysis.snapshot
    payload = {
        "file": args.file,
        "nodeCount": snapshot.node_count,
        "edgeCount": snapshot.edge_count,
        "nodeFields": list(snapshot.layout.node_fields),
        "totalSize": analysis.total_size,
        "classes": [row.to_dict() for row in rows[:top]],
    }
    text = (
        f"{args.file}: {snapshot.node_count:,} nodes, {snapshot.edge_count:,} edges, "
        f"{human_size(analysis.total_size)} reachable\n\n{class_table(rows[:top], analysis.total_size)}"
    )
    html = report.summary_page(args.file, analysis, rows, top) if args.html else None
    return _emit(args, payload, text, html)


def _fast_summary(args: argparse.Namespace, top: int) -> int:
    from heapsnap.analysis.reader import iter_source
    from heapsnap.analysis.render import summary_table
    from heapsnap.analysis.stream import StreamingSummary

    if args.html:
        raise InvalidInput("--html needs retained sizes: drop --fast")
    if not args.file.startswith("s3://") and not Path(args.file).exists():
        raise InvalidInput(
            f"snapshot {args.file!r} does not exist: give the path of a .heapsnapshot or an s3:// URI"
        )
    streaming = StreamingSummary(top=top)
    for chunk in iter_source(args.file, s3=_options(args)):
        streaming.feed(chunk)
    result = streaming.finish()
    return _emit(args, result.to_dict(), summary_table(result), None)


def _diff(args: argparse.Namespace) -> int:
    from heapsnap.analysis import report
    from heapsnap.analysis.render import comparison_table
    from heapsnap.analysis.views import compare

    top = _top(args)
    base, current = _load(args, args.base, edges=False), _load(args, args.current, edges=False)
    comparison = compare(base, current, (args.base, args.current))
    payload = {"base": args.base, "current": args.current, **comparison.to_dict()}
    payload["classes"] = payload["classes"][:top]
    shown = type(comparison)(comparison.method, comparison.reason, comparison.classes[:top])
    html = report.diff_page(args.base, args.current, comparison, top) if args.html else None
    return _emit(args, payload, comparison_table(shown), html)


def _leaks(args: argparse.Namespace) -> int:
    from heapsnap.analysis import report
    from heapsnap.analysis.render import leaks_table
    from heapsnap.analysis.views import analyze, find_leaks

    top = _top(args)
    base, target = _load(args, args.base, edges=False), _load(args, args.target, edges=False)
    final = analyze(_load(args, args.final))
    result = find_leaks(base, target, final, include_internal=args.all)
    payload = {"base": args.base, "target": args.target, "final": args.final, **result.to_dict()}
    payload["suspects"] = payload["suspects"][:top]
    shown = type(result)(result.baseline_count, result.target_new, result.leaked, result.suspects[:top])
    html = (
        report.leaks_page((args.base, args.target, args.final), (base, target, final), result, top)
        if args.html
        else None
    )
    return _emit(args, payload, leaks_table(shown), html)


def _inspect(args: argparse.Namespace) -> int:
    from heapsnap.analysis import report
    from heapsnap.analysis.heuristics import inspect
    from heapsnap.analysis.render import inspection_table

    top = _top(args)
    result, _ = inspect(list(args.files), lambda source: _load(args, source), top)
    html = report.inspect_page(result) if args.html else None
    return _emit(args, result.to_dict(), inspection_table(result), html)


def _retainers(args: argparse.Namespace) -> int:
    from heapsnap.analysis import report
    from heapsnap.analysis.render import path_text, retainers_table
    from heapsnap.analysis.views import analyze, retainers

    raw = str(args.node).lstrip("@")
    if not raw.isdigit():
        raise InvalidInput(f"--node must be an object id such as 12345 or @12345, not {args.node!r}")
    analysis = analyze(_load(args, args.file))
    node = analysis.snapshot.find_node(int(raw))
    rows = retainers(analysis, node)[: _top(args)]
    path = analysis.paths.path(analysis.snapshot, node)
    reachable = path and path[0].node == analysis.snapshot.root
    payload = {
        "file": args.file,
        "id": int(raw),
        "className": analysis.snapshot.class_of(node),
        "retainedSize": int(analysis.dominators.retained[node]),
        "retainers": [row.to_dict() for row in rows],
        "retainerPath": [{"edge": s.edge, "className": s.class_name, "id": s.node_id} for s in path]
        if reachable
        else [],
    }
    text = (
        f"{analysis.snapshot.class_of(node)} @{raw}: {len(rows)} retainers\n\n{retainers_table(rows)}\n\n"
        + (
            "Shortest retainer path from the GC roots:\n" + path_text(path)
            if reachable
            else "No path from the GC roots."
        )
    )
    html = (
        report.retainers_page(args.file, analysis, node, rows, path if reachable else [])
        if args.html
        else None
    )
    return _emit(args, payload, text, html)
