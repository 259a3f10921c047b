"""``heapsnap capture``: one heap snapshot of a local Node.js process, to a file or S3."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from heapsnap._priority import yield_cpu
from heapsnap._units import MiB
from heapsnap.cli import _signals
from heapsnap.engine import (
    CaptureOptions,
    CaptureResult,
    ProcessSelector,
    Progress,
    capture,
    capture_inspector,
    capture_series,
)
from heapsnap.engine._sampling import DEFAULT_INTERVAL
from heapsnap.errors import InvalidInput
from heapsnap.sinks.base import Sink
from heapsnap.sinks.file import FileSink
from heapsnap.sinks.s3 import S3Config, S3Sink, parse_s3_uri
from heapsnap.transports.local import LocalHost

__all__ = ["ProgressPrinter", "print_result", "register", "result_to_dict"]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "capture",
        help="take a heap snapshot of a running Node.js process",
        description="Take a V8 heap snapshot of a running Node.js process, with no restart, "
        "and stream it to a file or to S3.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int, help="pid of a Node.js process on this machine")
    target.add_argument("--inspect", metavar="URL", help="an open inspector: ws://HOST:PORT/ID or HOST:PORT")
    parser.add_argument("--method", choices=["auto", "inspector", "signal"], default="auto")
    parser.add_argument(
        "--worker",
        type=int,
        metavar="THREAD_ID",
        help="capture this worker_threads Worker (its threadId) instead of the main thread",
    )
    parser.add_argument(
        "--transfer",
        choices=["auto", "stream", "tempfile"],
        default="auto",
        help="inspector captures: tempfile has V8 write a temporary file next to the process (fast, "
        "needs disk space there), stream sends protocol chunks; auto picks tempfile where there is room",
    )
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the snapshot to FILE")
    output.add_argument(
        "--s3", metavar="s3://BUCKET/PREFIX", help="upload to S3 (a key, or a prefix ending in /)"
    )
    parser.add_argument("--gzip", action="store_true", help="compress the stored snapshot")
    parser.add_argument(
        "--redact",
        action="store_true",
        help="store the snapshot with the contents of the process's strings replaced by '*' "
        "(same objects, sizes and names of classes, properties and functions; see README)",
    )
    parser.add_argument(
        "--force", action="store_true", help="capture even when memory headroom looks too small"
    )
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long")
    parser.add_argument("--s3-endpoint", metavar="URL", help="endpoint of an S3-compatible server")
    parser.add_argument("--s3-region", metavar="REGION")
    parser.add_argument("--s3-path-style", action="store_true", help="address buckets by path, not host name")
    parser.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption")
    parser.add_argument(
        "--sse-kms-key-id",
        metavar="KEY",
        help="KMS key (id, ARN or alias/NAME) for --sse aws:kms, which it implies",
    )
    parser.add_argument(
        "--series",
        type=int,
        metavar="N",
        help="take N snapshots through one inspector session (ids stay comparable); "
        "files and keys get -1, -2, ... before their suffix",
    )
    parser.add_argument(
        "--sample-allocations",
        action="store_true",
        help="with --series: sample allocations from the first snapshot to the last, and name the "
        "functions that allocated what is still alive (heapsnap allocations, across the series)",
    )
    parser.add_argument(
        "--interval", type=float, metavar="SECONDS", help="time between the snapshots of a series"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def series_name(name: str, number: int) -> str:
    """``api.heapsnapshot.gz`` -> ``api-2.heapsnapshot.gz``: the number before the suffixes."""
    head, slash, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    return f"{head}{slash}{stem}-{number}{dot}{suffix}"


def _check_series(args: argparse.Namespace) -> None:
    if args.series is None:
        if args.sample_allocations:
            raise InvalidInput(
                "--sample-allocations needs --series N: it samples between the snapshots of a series "
                "(or use heapsnap allocations)."
            )
        if args.interval is not None:
            raise InvalidInput(
                "--interval needs --series N: it is the time between the snapshots of a series."
            )
        return
    if args.series < 2:
        raise InvalidInput(
            f"--series is {args.series}: a series needs at least 2 snapshots (use 3 for leaks)."
        )
    if args.interval is None:
        raise InvalidInput(
            "--series needs --interval SECONDS: the time to exercise the app between snapshots."
        )
    if args.interval < 0:
        raise InvalidInput(f"--interval is {args.interval:g}: give 0 or more seconds.")
    if args.method == "signal":
        raise InvalidInput(
            "--method signal cannot take a series: each signal snapshot starts a new heap profiler "
            "session, so object ids are not comparable between them. Use --method inspector."
        )
    if args.inspect:
        raise InvalidInput("--series needs --pid: a series is taken by heapsnap's own inspector session.")


def _check_storage(args: argparse.Namespace) -> None:
    if args.sse_kms_key_id is not None and args.sse == "AES256":
        raise InvalidInput(
            "--sse-kms-key-id names a KMS key: it needs --sse aws:kms (or no --sse), not AES256."
        )
    if (args.sse or args.sse_kms_key_id) and not args.s3:
        raise InvalidInput("--sse and --sse-kms-key-id encrypt in S3: they need --s3 s3://bucket/prefix.")


def _s3_key(args: argparse.Namespace) -> tuple[str, str]:
    bucket, key = parse_s3_uri(args.s3)
    if not key or key.endswith("/"):
        who = f"pid{args.pid}" if args.pid else "inspector"
        key += f"heapsnap-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{who}.heapsnapshot"
        key += ".gz" if args.gzip else ""
    return bucket, key


def _sink(args: argparse.Namespace, s3_key: tuple[str, str] | None, number: int | None = None) -> Sink:
    """The sink for the snapshot, or for snapshot ``number`` of a series."""
    if s3_key is None:
        path = args.output if number is None else args.output.with_name(series_name(args.output.name, number))
        return FileSink(path, gzip=args.gzip)
    bucket, key = s3_key
    config = S3Config(
        bucket=bucket,
        endpoint_url=args.s3_endpoint,
        region=args.s3_region,
        force_path_style=args.s3_path_style,
        server_side_encryption=args.sse or ("aws:kms" if args.sse_kms_key_id else None),
        kms_key_id=args.sse_kms_key_id,
    )
    return S3Sink(config, key if number is None else series_name(key, number), gzip=args.gzip)


class ProgressPrinter:
    """A one-line progress bar on a terminal; one line per phase otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.phase = ""

    async def __call__(self, progress: Progress) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self._line(progress))
            if progress.phase == "done":
                self.stream.write("\n")
        elif progress.phase != self.phase:
            self.stream.write(f"heapsnap: {progress.phase} {progress.message}".rstrip() + "\n")
        self.stream.flush()
        self.phase = progress.phase

    @staticmethod
    def _line(progress: Progress) -> str:
        if progress.phase in ("generating", "sampling") and progress.percent is not None:
            filled = int(progress.percent / 100 * 30)
            return f"{progress.phase:<12}[{'#' * filled}{'.' * (30 - filled)}] {progress.percent:5.1f}%"
        if progress.phase in ("transferring", "done"):
            return f"{progress.phase:<12}{progress.bytes_sent / MiB:,.1f} MiB"
        return f"{progress.phase:<12}{progress.message}"


def result_to_dict(result: CaptureResult) -> dict[str, Any]:
    data = dataclasses.asdict(dataclasses.replace(result, summary=None, allocations=None))
    data["summary"] = result.summary.to_dict() if result.summary is not None else None
    if result.allocations is not None:
        data["allocations"] = result.allocations.to_dict()
    else:
        del data["allocations"]
    return data


def print_result(result: CaptureResult, stream: TextIO = sys.stdout, top: int = 10) -> None:
    artifact = result.artifact
    size = f"{artifact.size_bytes / MiB:,.1f} MiB"
    if artifact.compressed_bytes is not None:
        size += f" ({artifact.compressed_bytes / MiB:,.1f} MiB gzip)"
    redacted = "   (redacted: string contents replaced)" if result.redacted else ""
    print(f"snapshot   {artifact.uri}{redacted}", file=stream)
    print(f"size       {size}   sha256 {artifact.sha256}", file=stream)
    target = result.target
    how = f"{target.method} ({target.transfer})" if target.method == "inspector" else target.method
    thread = f", worker thread {target.worker}" if target.worker is not None else ""
    print(f"target     pid {target.pid}{thread}, node {target.node_version}, by {how}", file=stream)
    print(
        f"timing     target paused {result.pause_seconds:.2f} s, transfer {result.transfer_seconds:.2f} s, "
        f"total {result.total_seconds:.2f} s",
        file=stream,
    )
    if result.preflight is not None:
        estimate = result.preflight
        print(
            f"preflight  ~{estimate.node_count:,} objects, "
            f"~{estimate.estimated_bytes / MiB:,.0f} MiB to build, about "
            f"{estimate.estimated_pause_seconds:.1f} s pause expected",
            file=stream,
        )
    for warning in result.warnings:
        print(f"warning    {warning}", file=stream)
    if result.summary is not None:
        summary = result.summary
        print(
            f"\n{summary.node_count:,} objects, {summary.edge_count:,} references, "
            f"{summary.total_self_size / MiB:,.1f} MiB self size. Top constructors by self size:",
            file=stream,
        )
        print(f"  {'constructor':<40} {'count':>10} {'self size':>12}", file=stream)
        for stat in summary.top_by_size[:top]:
            print(f"  {stat.name[:40]:<40} {stat.count:>10,} {stat.self_size / MiB:>10,.2f} MB", file=stream)


def _preload(s3: bool) -> None:
    """Import what the capture needs only later (botocore for S3, websockets for the
    inspector: ~0.2 s together) while the main thread probes the target and opens its
    inspector, waiting for Node.js to start next to it. numpy, for the summary, is
    imported by the summary's thread once V8 is at work (``heapsnap.engine._summary``)."""
    # In the order they are needed: the S3 upload starts during the probe.
    modules = ["heapsnap.sinks._s3client"] if s3 else []
    modules += ["websockets.asyncio.client"]
    for module in modules:
        with contextlib.suppress(ImportError):  # the capture's own import reports it
            importlib.import_module(module)


def run(args: argparse.Namespace) -> int:
    yield_cpu()  # before any thread or process starts: they inherit it
    preload = threading.Thread(target=_preload, args=(bool(args.s3),), name="heapsnap-preload", daemon=True)
    preload.start()
    try:
        return _run(args)
    finally:
        preload.join()


def _run(args: argparse.Namespace) -> int:
    if args.method == "signal" and args.inspect:
        raise InvalidInput(
            "--method signal needs --pid: a signal cannot be sent through an inspector address."
        )
    _check_series(args)
    _check_storage(args)
    options = CaptureOptions(
        method=args.method,
        transfer=args.transfer,
        preflight="warn" if args.force else "enforce",
        timeout_seconds=args.timeout,
        worker=args.worker,
        redact=args.redact,
    )
    printer = ProgressPrinter()
    s3_key = _s3_key(args) if args.s3 else None
    if args.series is not None:
        results = _signals.run(
            capture_series(
                LocalHost(),
                lambda index: _sink(args, s3_key, index + 1),
                count=args.series,
                interval_seconds=args.interval,
                selector=ProcessSelector(pid=args.pid),
                options=dataclasses.replace(options, method="inspector"),
                on_progress=printer,
                sample_allocations=DEFAULT_INTERVAL if args.sample_allocations else None,
            )
        )
        if args.json:
            json.dump([result_to_dict(result) for result in results], sys.stdout, indent=2)
            print()
        else:
            for number, result in enumerate(results, 1):
                print(
                    f"series {number}/{len(results)}" if number == 1 else f"\nseries {number}/{len(results)}"
                )
                print_result(result)
            if results[-1].allocations is not None:
                from heapsnap.cli.allocations import print_profile

                print("\nallocations, from the first snapshot to the last")
                print_profile(results[-1].allocations)
        return 0
    sink = _sink(args, s3_key)
    if args.inspect:
        result = _signals.run(capture_inspector(args.inspect, sink, options=options, on_progress=printer))
    else:
        selector = ProcessSelector(pid=args.pid)
        result = _signals.run(
            capture(LocalHost(), sink, selector=selector, options=options, on_progress=printer)
        )
    if args.json:
        json.dump(result_to_dict(result), sys.stdout, indent=2)
        print()
    else:
        print_result(result)
    return 0
