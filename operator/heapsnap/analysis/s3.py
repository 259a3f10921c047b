"""Reading a snapshot stored in S3, through the capture area's S3 client (imported lazily:
analysis of local files needs neither boto3 nor the sinks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["S3Options", "iter_s3_object"]


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket; credentials come from boto3's standard chain."""

    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False


def iter_s3_object(uri: str, options: S3Options | None = None) -> Iterator[bytes]:
    """The stored bytes of ``s3://bucket/key``, chunk by chunk, from synchronous code."""
    from heapsnap.sinks.s3 import S3Config, open_object, parse_s3_uri

    options = options or S3Options()
    bucket, key = parse_s3_uri(uri)
    config = S3Config(
        bucket=bucket,
        endpoint_url=options.endpoint_url,
        region=options.region,
        force_path_style=options.path_style,
    )
    loop = asyncio.new_event_loop()
    chunks = open_object(config, key)
    try:
        while True:
            try:
                chunk = loop.run_until_complete(anext(chunks))
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            loop.run_until_complete(close())
        loop.close()
