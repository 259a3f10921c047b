"""``heapsnap redact IN OUT``: a copy of a snapshot already taken, without its string contents.

What is replaced and what is kept is :mod:`heapsnap.analysis.redact`'s (README,
"Redacted snapshots"). IN is a path (gzip detected by its magic) or ``s3://bucket/key``;
OUT is a path or ``s3://bucket/key``, gzip-compressed with ``--gzip`` or a name ending
in ``.gz``. Nothing is left at OUT when the input is not a whole snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from heapsnap._units import MiB
from heapsnap.cli import _signals
from heapsnap.errors import InvalidInput, SnapshotFormatError
from heapsnap.sinks.base import Artifact, Sink

__all__ = ["register"]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "redact",
        help="copy a snapshot with the contents of its strings replaced",
        description="Copy a heap snapshot with every string value of the program replaced by '*' of "
        "the same length. Objects, references, ids, sizes and the names of classes, properties and "
        "functions stay, so it loads in Chrome DevTools and every heapsnap analysis gives the same "
        "counts and sizes.",
    )
    parser.add_argument("input", metavar="IN", help="snapshot path (gzip detected) or s3://bucket/key")
    parser.add_argument("output", metavar="OUT", help="path or s3://bucket/key to write the copy to")
    parser.add_argument("--gzip", action="store_true", help="compress OUT (implied by a name ending in .gz)")
    parser.add_argument("--s3-endpoint", metavar="URL", help="endpoint of an S3-compatible server")
    parser.add_argument("--s3-region", metavar="REGION")
    parser.add_argument("--s3-path-style", action="store_true", help="address buckets by path, not host name")
    parser.add_argument("--sse", choices=["AES256", "aws:kms"], help="server-side encryption of an s3:// OUT")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _sink(args: argparse.Namespace) -> Sink:
    gzip = args.gzip or args.output.endswith(".gz")
    if args.output.startswith("s3://"):
        from heapsnap.sinks.s3 import S3Config, S3Sink, parse_s3_uri

        bucket, key = parse_s3_uri(args.output)
        if not key or key.endswith("/"):
            raise InvalidInput(f"OUT {args.output!r} names no key: give s3://bucket/path/name.heapsnapshot")
        config = S3Config(
            bucket=bucket,
            endpoint_url=args.s3_endpoint,
            region=args.s3_region,
            force_path_style=args.s3_path_style,
            server_side_encryption=args.sse,
        )
        return S3Sink(config, key, gzip=gzip)
    if args.sse:
        raise InvalidInput("--sse encrypts in S3: it needs an s3://bucket/key OUT.")
    from heapsnap.sinks.file import FileSink

    path = Path(args.output)
    if path.is_dir():
        raise InvalidInput(f"OUT {args.output!r} is a directory: give the path of the file to write")
    if not args.input.startswith("s3://") and Path(args.input).resolve() == path.resolve():
        raise InvalidInput(f"OUT {args.output!r} is IN: write the redacted copy to another path")
    return FileSink(path, gzip=gzip)


def run(args: argparse.Namespace) -> int:
    from heapsnap.analysis.reader import iter_source
    from heapsnap.analysis.s3 import S3Options

    if not args.input.startswith("s3://") and not Path(args.input).is_file():
        raise InvalidInput(
            f"IN {args.input!r} is not a file: give the path of a .heapsnapshot or an s3:// URI"
        )
    sink = _sink(args)
    options = S3Options(endpoint_url=args.s3_endpoint, region=args.s3_region, path_style=args.s3_path_style)
    chunks = iter_source(args.input, s3=options)
    artifact, redacted = _signals.run(_copy(chunks, sink))
    if args.json:
        import json

        json.dump(
            {
                "uri": artifact.uri,
                "sizeBytes": artifact.size_bytes,
                "compressedBytes": artifact.compressed_bytes,
                "sha256": artifact.sha256,
                "stringsRedacted": redacted,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        size = f"{artifact.size_bytes / MiB:,.1f} MiB"
        if artifact.compressed_bytes is not None:
            size += f" ({artifact.compressed_bytes / MiB:,.1f} MiB gzip)"
        print(f"redacted   {redacted:,} strings")
        print(f"snapshot   {artifact.uri}")
        print(f"size       {size}   sha256 {artifact.sha256}")
    return 0


async def _copy(chunks: Iterator[bytes], sink: Sink) -> tuple[Artifact, int]:
    from heapsnap.analysis.redact import Redactor

    redactor = Redactor()
    try:
        prepare = getattr(sink, "prepare", None)
        if prepare is not None:
            await prepare()
        while True:
            # Reading (and gunzipping, or an S3 download) runs beside the redaction.
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            out = redactor.feed(chunk)
            if out:
                await sink.write(out)
        await sink.write(redactor.finish())
        artifact = await sink.commit()
    except SnapshotFormatError as error:
        await sink.abort()
        raise SnapshotFormatError(f"{error} (nothing was written)") from None
    except BaseException:
        await sink.abort()
        raise
    return artifact, redactor.strings_redacted
