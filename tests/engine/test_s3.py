"""The S3 sink against real S3-compatible servers (moto and versitygw on loopback)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.awsrequest import AWSConnection

from heapsnap.engine import CaptureOptions, ProcessSelector, Progress, Transfer, capture
from heapsnap.errors import (
    BucketNotFound,
    InvalidInput,
    ProcessNotFound,
    StorageAccessDenied,
    StorageError,
    TargetExited,
)
from heapsnap.sinks import s3 as s3_module
from heapsnap.sinks._s3client import SEND_BLOCK
from heapsnap.sinks.s3 import (
    MAX_PARTS,
    S3Config,
    S3Sink,
    abort_incomplete_uploads,
    delete_object,
    open_object,
    parse_s3_uri,
)
from heapsnap.transports.local import LocalHost
from tests.support.nodeproc import LEAKY_APP, NodeProcess
from tests.support.s3server import S3Server

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]
StartNode = Callable[..., NodeProcess]
MiB = 1 << 20


def config_for(server: S3Server, bucket: str, **changes: object) -> S3Config:
    fields: dict[str, object] = {
        "bucket": bucket,
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "force_path_style": True,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
    }
    fields.update(changes)
    return S3Config(**fields)  # type: ignore[arg-type]


def uploads(server: S3Server, bucket: str) -> list[object]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/a/b.heapsnapshot") == ("bucket", "a/b.heapsnapshot")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")


async def test_multipart_bytes_sha256_and_encryption(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    data = os.urandom(5 * MiB) * 2 + b"tail"
    sink = S3Sink(
        config_for(s3_server, bucket, server_side_encryption="AES256"), "a/b.bin", part_size=5 * MiB
    )
    for offset in range(0, len(data), 700_000):
        await sink.write(data[offset : offset + 700_000])
    artifact = await sink.commit()
    assert artifact.uri == f"s3://{bucket}/a/b.bin"
    assert artifact.size_bytes == len(data) and artifact.compressed_bytes is None
    stored = s3_server.client().get_object(Bucket=bucket, Key="a/b.bin")
    body = stored["Body"].read()
    assert body == data
    assert artifact.sha256 == hashlib.sha256(body).hexdigest()
    if s3_server.reports_sse:
        assert stored.get("ServerSideEncryption") == "AES256"
    assert uploads(s3_server, bucket) == []


async def test_encryption_with_a_kms_key_of_ones_own(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    config = config_for(s3_server, bucket, server_side_encryption="aws:kms", kms_key_id="alias/heapsnaps")
    sink = S3Sink(config, "kms.bin")
    await sink.write(b"x" * 1000)
    await sink.commit()
    head = s3_server.client().head_object(Bucket=bucket, Key="kms.bin")
    if s3_server.reports_sse:  # versitygw accepts the headers and reports none
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/heapsnaps")


def test_a_kms_key_without_aws_kms_is_refused() -> None:
    config = S3Config(bucket="b", server_side_encryption="AES256", kms_key_id="alias/k")
    with pytest.raises(InvalidInput, match="kmsKeyId 'alias/k' needs serverSideEncryption aws:kms"):
        S3Sink(config, "k")


async def test_parts_are_sent_in_blocks_of_a_mebibyte(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # botocore's own 128 KiB blocks cost more CPU per byte, on the cores the target needs.
    sent: list[int] = []
    original = AWSConnection.send

    def send(self: AWSConnection, data: bytes) -> None:
        sent.append(len(data))
        original(self, data)

    monkeypatch.setattr(AWSConnection, "send", send)
    bucket = s3_server.create_bucket()
    data = os.urandom(5 * MiB) + b"tail"
    sink = S3Sink(config_for(s3_server, bucket), "blocks.bin", part_size=5 * MiB)
    for offset in range(0, len(data), 300_000):  # a part of many pieces
        await sink.write(data[offset : offset + 300_000])
    await sink.commit()
    assert s3_server.client().get_object(Bucket=bucket, Key="blocks.bin")["Body"].read() == data
    assert sent.count(SEND_BLOCK) == 5, sent


def test_parts_grow_so_that_ten_thousand_hold_hundreds_of_gibibytes() -> None:
    sink = S3Sink(S3Config(bucket="b"), "k")
    sizes = [sink.size_of_part(number) for number in range(1, MAX_PARTS + 1)]
    assert sizes == sorted(sizes)
    # Below 39 GiB memory stays at three 8 MiB parts; the largest part is 128 MiB.
    assert sum(sizes[:5000]) == 5000 * 8 * MiB and sizes[5000] == 16 * MiB
    assert sizes[-1] == 128 * MiB and sum(sizes) == 340_000 * MiB


async def test_parts_grow_on_a_real_server(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    data = os.urandom(MiB) * 23 + b"tail"
    sink = S3Sink(config_for(s3_server, bucket), "grow.bin", part_size=5 * MiB, grow_after=2, grow_every=1)
    for offset in range(0, len(data), 3 * MiB):
        await sink.write(data[offset : offset + 3 * MiB])
    artifact = await sink.commit()
    client = s3_server.client()
    sizes = [
        client.head_object(Bucket=bucket, Key="grow.bin", PartNumber=n)["ContentLength"] for n in (1, 2, 3, 4)
    ]
    assert sizes == [5 * MiB, 5 * MiB, 10 * MiB, 3 * MiB + 4]
    body = client.get_object(Bucket=bucket, Key="grow.bin")["Body"].read()
    assert body == data and artifact.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_snapshot_beyond_the_part_limit_fails_and_leaves_nothing(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "MAX_PARTS", 2)
    bucket = s3_server.create_bucket()
    sink = S3Sink(config_for(s3_server, bucket), "big.bin", part_size=5 * MiB)
    await sink.write(os.urandom(11 * MiB))  # two parts sent, the third would be one too many
    with pytest.raises(StorageError, match=r"larger than one S3 upload can hold \(2 parts.*--gzip") as error:
        await sink.commit()
    assert error.value.reason == "SnapshotTooLarge" and not error.value.retryable
    assert uploads(s3_server, bucket) == []
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


async def test_gzip_round_trip_and_download(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    config = config_for(s3_server, bucket)
    data = json.dumps({"nodes": list(range(200_000))}).encode()
    sink = S3Sink(config, "snap.heapsnapshot.gz", gzip=True)
    await sink.write(data)
    artifact = await sink.commit()
    downloaded = b"".join([chunk async for chunk in open_object(config, "snap.heapsnapshot.gz")])
    assert hashlib.sha256(downloaded).hexdigest() == artifact.sha256
    assert artifact.compressed_bytes == len(downloaded) < artifact.size_bytes == len(data)
    assert gzip.decompress(downloaded) == data
    await delete_object(config, "snap.heapsnapshot.gz")
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


async def test_abort_leaves_no_multipart_upload(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    sink = S3Sink(config_for(s3_server, bucket), "partial.bin", part_size=5 * MiB)
    await sink.write(os.urandom(6 * MiB))
    await sink.write(b"more")
    assert len(uploads(s3_server, bucket)) == 1
    await sink.abort()
    assert uploads(s3_server, bucket) == []
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


async def test_abort_incomplete_uploads_after_a_restart(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="ns/snap")
    client.create_multipart_upload(Bucket=bucket, Key="ns/snap-other")
    assert await abort_incomplete_uploads(config_for(s3_server, bucket), "ns/snap") == 1
    assert [u["Key"] for u in uploads(s3_server, bucket)] == ["ns/snap-other"]  # type: ignore[index]


async def test_missing_bucket(s3_server: S3Server) -> None:
    sink = S3Sink(config_for(s3_server, "heapsnap-no-such-bucket"), "x")
    with pytest.raises(BucketNotFound, match="heapsnap-no-such-bucket"):
        await sink.prepare()
    await sink.abort()


async def test_wrong_credentials(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    sink = S3Sink(config_for(s3_server, bucket, secret_access_key="wrong-secret"), "x")
    with pytest.raises(StorageAccessDenied, match="access key and secret"):
        await sink.prepare()
    await sink.abort()
    assert uploads(s3_server, bucket) == []


async def test_capture_to_s3(s3_server: S3Server, node_process: StartNode) -> None:
    bucket = s3_server.create_bucket()
    app = node_process(LEAKY_APP, version="24", args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    sink = S3Sink(config_for(s3_server, bucket), "app.heapsnapshot.gz", gzip=True, part_size=5 * MiB)
    result = await capture(LocalHost(), sink, selector=ProcessSelector(pid=app.pid))
    body = s3_server.client().get_object(Bucket=bucket, Key="app.heapsnapshot.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.artifact.sha256
    snapshot = json.loads(gzip.decompress(body))
    assert (
        len(snapshot["nodes"]) // len(snapshot["snapshot"]["meta"]["node_fields"])
        == (snapshot["snapshot"]["node_count"])
    )
    assert uploads(s3_server, bucket) == []


async def test_missing_bucket_is_found_before_the_target_is_touched(
    s3_server: S3Server, node_process: StartNode
) -> None:
    app = node_process(LEAKY_APP, args=["--inspect-port=0"], env={"LEAKY_COUNT": "1000"})
    phases: list[str] = []

    async def on_progress(progress: Progress) -> None:
        phases.append(progress.phase)

    with pytest.raises(BucketNotFound):
        await capture(
            LocalHost(),
            S3Sink(config_for(s3_server, "heapsnap-missing"), "x"),
            selector=ProcessSelector(pid=app.pid),
            on_progress=on_progress,
        )
    assert phases == ["probing"]
    assert "Debugger listening" not in app.stderr_text()


async def test_a_failed_probe_leaves_no_upload_it_overlapped(s3_server: S3Server) -> None:
    # The upload is started while the agent probes: a probe that fails first must still
    # wait for it, and abort it.
    class SlowToStart(S3Sink):
        async def prepare(self) -> None:
            await asyncio.sleep(1.0)  # a slow endpoint: the probe fails first
            await super().prepare()

    bucket = s3_server.create_bucket()
    with pytest.raises(ProcessNotFound):
        await capture(
            LocalHost(),
            SlowToStart(config_for(s3_server, bucket), "x"),
            selector=ProcessSelector(pid=2**22 + 1),
        )
    await asyncio.sleep(1.5)  # had the start been left running, it would have ended by now
    assert uploads(s3_server, bucket) == []


@pytest.mark.parametrize("transfer", ["stream", "tempfile"])
async def test_target_exiting_mid_upload_aborts_the_multipart_upload(
    s3_server: S3Server, node_process: StartNode, tmp_path: Path, transfer: Transfer
) -> None:
    bucket = s3_server.create_bucket()
    # Big enough that V8 is still writing its file when the first 4 MiB are uploaded.
    count = "100000" if transfer == "stream" else "1000000"
    app = node_process(LEAKY_APP, args=["--inspect-port=0"], env={"LEAKY_COUNT": count})

    async def kill_when_transferring(progress: Progress) -> None:
        if progress.phase == "transferring" or progress.bytes_sent:
            app.popen.kill()

    with pytest.raises(TargetExited):
        await capture(
            LocalHost(),
            S3Sink(config_for(s3_server, bucket), "gone", part_size=5 * MiB),
            selector=ProcessSelector(pid=app.pid),
            options=CaptureOptions(method="inspector", transfer=transfer, timeout_seconds=120),
            on_progress=kill_when_transferring,
        )
    assert uploads(s3_server, bucket) == []
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)
