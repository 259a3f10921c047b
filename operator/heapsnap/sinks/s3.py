"""An S3 sink: a multipart upload fed while the snapshot streams, with bounded memory.

boto3 blocks, so every call runs in a thread; parts upload while chunks keep arriving,
at most ``max_in_flight`` at a time, so heapsnap holds about
``(max_in_flight + 1) * part_size`` bytes (two parts uploading while the next fills,
by default: boto3 itself costs ~30 MiB). A part is a list of views of the pieces
written, which the summary reads too: nothing is copied. Any failure aborts the
multipart upload: nothing is left in the bucket.

S3 takes at most 10,000 parts per upload: 78 GiB of 8 MiB parts. Parts keep their size
for the first 5,000 (39 GiB, so memory stays as above for any snapshot below that), then
double every 1,250 parts, up to 16 times their size: 10,000 parts hold 332 GiB.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import io
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

import botocore.exceptions

from heapsnap._units import MiB
from heapsnap.errors import BucketNotFound, InvalidInput, StorageAccessDenied, StorageError, UploadFailed
from heapsnap.sinks.base import Artifact, StoredBytes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIN_PART_SIZE = 5 * MiB
#: S3's limit on the parts of one multipart upload.
MAX_PARTS = 10_000
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "Forbidden",
    "403",
    "AllAccessDisabled",
    "InvalidSecurity",
}


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the bucket. Credentials left None use boto3's standard chain."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    force_path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    server_side_encryption: str | None = None
    #: The KMS key (id, ARN or alias) for ``aws:kms``; None: the bucket's, else AWS's own.
    kms_key_id: str | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise InvalidInput(f"{uri!r} is not an S3 URI: write it as s3://bucket/prefix.")
    return match.group(1), match.group(2)


def make_client(config: S3Config) -> S3Client:
    """An S3 client for ``config`` (botocore's client machinery loads on first use)."""
    from heapsnap.sinks import _s3client

    return _s3client.make_client(config)


def warm_up() -> None:
    """Load S3's service model now (dummy credentials: nothing is looked up or sent), so
    that the first capture of a long-running process does not wait ~0.15 s for it."""
    make_client(S3Config(bucket="warm-up", region="us-east-1", access_key_id="-", secret_access_key="-"))


def storage_error(error: Exception, config: S3Config, key: str, action: str) -> StorageError:
    """The heapsnap error for a boto3 failure, with what to fix."""
    where = f"s3://{config.bucket}/{key}" + (f" at {config.endpoint_url}" if config.endpoint_url else "")
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket",):
            return BucketNotFound(
                f"Bucket {config.bucket!r} does not exist ({action} {where}): create it or fix the bucket."
            )
        if code in _DENIED:
            return StorageAccessDenied(
                f"S3 refused to {action} {where} ({code}): check the access key and secret (the credentials "
                "secret, or the boto3 credential chain) and that they allow s3:PutObject and "
                "s3:AbortMultipartUpload on this bucket and prefix."
            )
        return UploadFailed(f"S3 failed to {action} {where}: {code}: {error}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return StorageAccessDenied(
            f"No S3 credentials found to {action} {where}: set a credentials secret, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or an IAM role."
        )
    if isinstance(
        error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return UploadFailed(f"Cannot reach S3 to {action} {where}: {error}; check the endpoint and network.")
    return UploadFailed(f"S3 failed to {action} {where}: {error}")


class _PartBody(io.RawIOBase):
    """A part's pieces as one seekable file for boto3: read a block at a time, never joined whole."""

    def __init__(self, pieces: list[memoryview]) -> None:
        super().__init__()
        self._pieces = pieces
        self._starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _take(self, size: int) -> list[memoryview]:
        """Views of the next ``size`` bytes (fewer at the end), from the position on."""
        taken: list[memoryview] = []
        index = bisect.bisect_right(self._starts, self._pos) - 1
        while size > 0 and index < len(self._pieces):
            piece = self._pieces[index][self._pos - self._starts[index] :][:size]
            taken.append(piece)
            size -= len(piece)
            self._pos += len(piece)
            index += 1
        return taken

    def read(self, size: int | None = -1) -> bytes:
        # One copy: io.RawIOBase's read fills a buffer through readinto and copies that.
        # botocore hashes a part and urllib3 sends it through here, 1 MiB at a time.
        if size is None or size < 0:
            size = len(self) - self._pos
        taken = self._take(size)
        return bytes(taken[0]) if len(taken) == 1 else b"".join(taken)

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        done = 0
        for piece in self._take(len(out)):
            out[done : done + len(piece)] = piece
            done += len(piece)
        return done

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return self._starts[-1]


class S3Sink:
    """Streams a snapshot into ``s3://bucket/key`` as a multipart upload."""

    def __init__(
        self,
        config: S3Config,
        key: str,
        *,
        gzip: bool = False,
        part_size: int = 8 * MiB,
        max_in_flight: int = 2,
        grow_after: int = 5_000,
        grow_every: int = 1_250,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise InvalidInput(f"part_size {part_size} is below S3's minimum of 5 MiB.")
        if config.server_side_encryption not in (None, "AES256", "aws:kms"):
            raise InvalidInput(
                f"serverSideEncryption {config.server_side_encryption!r}: use AES256 or aws:kms."
            )
        if config.kms_key_id is not None and config.server_side_encryption != "aws:kms":
            raise InvalidInput(
                f"kmsKeyId {config.kms_key_id!r} needs serverSideEncryption aws:kms "
                f"(it is {config.server_side_encryption or 'unset'}): set it, or drop the key."
            )
        self.config = config
        self.key = key
        self.gzip = gzip
        self.part_size = part_size
        self._grow_after = grow_after
        self._grow_every = grow_every
        self._client: S3Client | None = None
        self._upload_id: str | None = None
        # The part being filled: views of the pieces written, not copies of them.
        self._pending: list[memoryview] = []
        self._used = 0
        self._parts: dict[int, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bytes = StoredBytes(gzip=gzip)
        self._done = False

    @property
    def uri(self) -> str:
        return f"s3://{self.config.bucket}/{self.key}"

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": "application/json"}
        if self.gzip:
            extra["ContentEncoding"] = "gzip"
        if self.config.server_side_encryption:
            extra["ServerSideEncryption"] = self.config.server_side_encryption
        if self.config.kms_key_id:
            extra["SSEKMSKeyId"] = self.config.kms_key_id
        return extra

    async def prepare(self) -> None:
        """Start the multipart upload: bucket, credentials and permissions are checked
        before the target is touched."""
        if self._upload_id is not None:
            return
        try:
            self._client = await asyncio.to_thread(make_client, self.config)
            client = self._client
            reply = await asyncio.to_thread(
                lambda: client.create_multipart_upload(
                    Bucket=self.config.bucket, Key=self.key, **self._extra()
                )
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise storage_error(error, self.config, self.key, "start an upload to") from error
        self._upload_id = reply["UploadId"]

    async def write(self, data: bytes) -> None:
        """Take the next bytes; they are kept, not copied, until their part is uploaded."""
        await self._append(self._bytes.encode(data))

    def size_of_part(self, number: int) -> int:
        """The size of part ``number`` (counted from 1), the last one excepted."""
        if number <= self._grow_after:
            return self.part_size
        doublings = min(4, 1 + (number - self._grow_after - 1) // self._grow_every)
        return self.part_size << doublings

    async def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            size = self.size_of_part(len(self._tasks) + 1)
            taken = min(len(view), size - self._used)
            self._pending.append(view[:taken])
            self._used += taken
            view = view[taken:]
            if self._used == size:
                await self._send_part()

    async def _send_part(self) -> None:
        await self.prepare()
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                await task
        number = len(self._tasks) + 1
        if number > MAX_PARTS:
            stored = sum(self.size_of_part(n) for n in range(1, MAX_PARTS + 1))
            raise StorageError(
                f"s3://{self.config.bucket}/{self.key}: the snapshot is larger than one S3 upload can "
                f"hold ({MAX_PARTS:,} parts, {stored / (1 << 30):,.0f} GiB with parts of "
                f"{self.part_size // MiB} MiB); store it gzipped (--gzip, spec.storage.compression: gzip) "
                "or to a file.",
                reason="SnapshotTooLarge",
            )
        pieces, self._pending, self._used = self._pending, [], 0
        # Waiting here holds the capture back: memory stays within (max_in_flight + 1) parts.
        await self._slots.acquire()
        self._tasks.append(asyncio.create_task(self._upload_part(number, pieces)))

    async def _upload_part(self, number: int, pieces: list[memoryview]) -> None:
        assert self._client is not None and self._upload_id is not None
        client, upload_id = self._client, self._upload_id
        try:
            reply = await asyncio.to_thread(
                lambda: client.upload_part(
                    Bucket=self.config.bucket,
                    Key=self.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=cast(IO[bytes], _PartBody(pieces)),
                )
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise storage_error(error, self.config, self.key, f"upload part {number} of") from error
        finally:
            self._slots.release()
        self._parts[number] = reply["ETag"]

    async def commit(self) -> Artifact:
        try:
            await self._append(self._bytes.finish())
            if self._used or not self._tasks:
                await self._send_part()
            await asyncio.gather(*self._tasks)
            assert self._client is not None and self._upload_id is not None
            client, upload_id = self._client, self._upload_id
            parts = [{"PartNumber": n, "ETag": self._parts[n]} for n in sorted(self._parts)]
            try:
                await asyncio.to_thread(
                    lambda: client.complete_multipart_upload(
                        Bucket=self.config.bucket,
                        Key=self.key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    )
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                raise storage_error(error, self.config, self.key, "complete the upload of") from error
        except BaseException:
            await self.abort()
            raise
        self._done = True
        return self._bytes.artifact(self.uri)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pending = []
        if self._upload_id is not None and self._client is not None:
            client, upload_id = self._client, self._upload_id
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                await asyncio.to_thread(
                    lambda: client.abort_multipart_upload(
                        Bucket=self.config.bucket, Key=self.key, UploadId=upload_id
                    )
                )


async def abort_incomplete_uploads(config: S3Config, key: str) -> int:
    """Abort every unfinished multipart upload of ``key`` (after a restart); returns how many."""

    def run() -> int:
        client = make_client(config)
        aborted = 0
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=config.bucket, Prefix=key)
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload.get("Key") == key:
                    client.abort_multipart_upload(Bucket=config.bucket, Key=key, UploadId=upload["UploadId"])
                    aborted += 1
        return aborted

    try:
        return await asyncio.to_thread(run)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise storage_error(error, config, key, "abort unfinished uploads of") from error


async def delete_object(config: S3Config, key: str) -> None:
    def run() -> None:
        make_client(config).delete_object(Bucket=config.bucket, Key=key)

    try:
        await asyncio.to_thread(run)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise storage_error(error, config, key, "delete") from error


async def open_object(config: S3Config, key: str, *, chunk_size: int = MiB) -> AsyncIterator[bytes]:
    """Download ``s3://bucket/key`` as a stream of chunks (the stored bytes, gzip or not)."""
    try:
        client = await asyncio.to_thread(make_client, config)
        reply = await asyncio.to_thread(lambda: client.get_object(Bucket=config.bucket, Key=key))
    except botocore.exceptions.ClientError as error:
        if str(error.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
            raise InvalidInput(f"s3://{config.bucket}/{key} does not exist: check the key.") from error
        raise storage_error(error, config, key, "download") from error
    except botocore.exceptions.BotoCoreError as error:
        raise storage_error(error, config, key, "download") from error
    body = reply["Body"]
    try:
        while chunk := await asyncio.to_thread(body.read, chunk_size):
            yield chunk
    finally:
        body.close()
