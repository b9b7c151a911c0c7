"""S3 transfers for task artifacts, on the shared aiobotocore client.

Small objects go in one request; large ones stream from and to disk through aiofiles, as multipart
uploads with bounded concurrency, so no payload is ever held whole in memory twice. Errors are
translated at this edge (``errors.raise_aws_error``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import aiofiles
from botocore.exceptions import BotoCoreError, ClientError

from byoc_executor.errors import raise_aws_error

log = logging.getLogger(__name__)

SINGLE_REQUEST_LIMIT = 16 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
PART_CONCURRENCY = 4
_READ_CHUNK = 1024 * 1024
INLINE_CHECKSUM_LIMIT = 256 * 1024
"""Bodies larger than this get their CRC32 computed in a worker thread rather than by botocore
on the event loop (16 MiB takes ~10-30 ms)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return cls(bucket, key)

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key.rstrip('/')}/{name}")


async def head_bucket(s3: Any, bucket: str) -> None:
    """Check that the bucket exists and these credentials reach it.

    Raises:
        ResourceNotFoundError / AccessDeniedError: translated from the S3 answer.
    """
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        raise_aws_error(e, "HeadBucket", f"s3://{bucket}")


async def exists(s3: Any, where: S3Location) -> bool:
    """Whether the object exists. A cheap probe: any error other than "not found" also says False."""
    try:
        await s3.head_object(Bucket=where.bucket, Key=where.key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            log.debug("HeadObject %s: %s", where.uri, e)
        return False
    except BotoCoreError as e:  # S3 unreachable after botocore's retries: not known to exist
        log.debug("HeadObject %s: %s", where.uri, e)
        return False
    return True


def crc32_checksum(data: bytes) -> dict[str, str]:
    """The request arguments botocore would add for ``data`` (its default CRC32), computed here."""
    return {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()}


def put_options(tags: dict[str, str] | None = None, kms_key_id: str = "") -> dict[str, str]:
    """The PutObject / CreateMultipartUpload arguments for the object's tags and SSE-KMS."""
    extra = {"Tagging": _tagging(tags)} if tags else {}
    if kms_key_id:
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
    return extra


async def put_bytes(s3: Any, where: S3Location, data: bytes, tags: dict[str, str] | None = None, kms_key_id: str = "") -> None:
    """Upload ``data`` in one request."""
    extra = put_options(tags, kms_key_id)
    if len(data) > INLINE_CHECKSUM_LIMIT:
        extra.update(await asyncio.to_thread(crc32_checksum, data))
    try:
        await s3.put_object(Bucket=where.bucket, Key=where.key, Body=data, **extra)
    except ClientError as e:
        raise_aws_error(e, "PutObject", where.uri)


async def upload(
    s3: Any, where: S3Location, pieces: Sequence[bytes | str], tags: dict[str, str] | None = None, kms_key_id: str = ""
) -> int:
    """Upload the concatenation of ``pieces`` (bytes, or paths of local files) as one object.

    Up to SINGLE_REQUEST_LIMIT bytes go in one PutObject. A larger object is a multipart upload
    whose parts are read from disk through aiofiles as they are sent, PART_CONCURRENCY at a time:
    memory holds at most that many parts, whatever the object's size. A failed multipart upload
    is aborted, so no parts are left behind to be billed.

    Returns:
        The object's size in bytes.
    """
    sizes = [len(p) if isinstance(p, (bytes, bytearray, memoryview)) else os.path.getsize(p) for p in pieces]
    size = sum(sizes)
    if size <= SINGLE_REQUEST_LIMIT:
        await put_bytes(s3, where, await _read_range(pieces, sizes, 0, size), tags, kms_key_id)
        return size
    extra = put_options(tags, kms_key_id)
    try:
        upload = await s3.create_multipart_upload(Bucket=where.bucket, Key=where.key, **extra)
    except ClientError as e:
        raise_aws_error(e, "CreateMultipartUpload", where.uri)
    upload_id = upload["UploadId"]
    semaphore = asyncio.Semaphore(PART_CONCURRENCY)

    async def send(number: int, offset: int) -> dict[str, Any]:
        async with semaphore:
            body = await _read_range(pieces, sizes, offset, min(PART_SIZE, size - offset))
            checksum = await asyncio.to_thread(crc32_checksum, body)
            answer = await s3.upload_part(
                Bucket=where.bucket, Key=where.key, UploadId=upload_id, PartNumber=number, Body=body, **checksum
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}

    try:
        parts = await asyncio.gather(*(send(i + 1, off) for i, off in enumerate(range(0, size, PART_SIZE))))
        await s3.complete_multipart_upload(
            Bucket=where.bucket, Key=where.key, UploadId=upload_id, MultipartUpload={"Parts": list(parts)}
        )
    except BaseException as e:
        with contextlib.suppress(ClientError, BotoCoreError):
            await asyncio.shield(s3.abort_multipart_upload(Bucket=where.bucket, Key=where.key, UploadId=upload_id))
        if isinstance(e, ClientError):
            raise_aws_error(e, "UploadPart", where.uri)
        raise
    return size


async def upload_file(s3: Any, path: str, where: S3Location, tags: dict[str, str] | None = None, kms_key_id: str = "") -> int:
    """Upload a local file: one request when small, a streamed multipart upload when large."""
    return await upload(s3, where, [path], tags, kms_key_id)


async def _read_range(pieces: Sequence[bytes | str], sizes: list[int], offset: int, length: int) -> bytes:
    """``length`` bytes of the concatenation of ``pieces`` from ``offset``, reading files through aiofiles."""
    chunks: list[bytes] = []
    start = 0
    for piece, size in zip(pieces, sizes):
        end = start + size
        if offset < end and offset + length > start:
            lo, hi = max(offset, start) - start, min(offset + length, end) - start
            if isinstance(piece, (bytes, bytearray, memoryview)):
                chunks.append(bytes(piece[lo:hi]))
            else:
                async with aiofiles.open(piece, "rb") as f:
                    await f.seek(lo)
                    chunks.append(await f.read(hi - lo))
        start = end
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def download_file(s3: Any, where: S3Location, path: str) -> int:
    """Stream an object to a local file. Returns the number of bytes written.

    Raises:
        ResourceNotFoundError: the object does not exist.
    """
    answer = await _get_object(s3, where)
    async with answer["Body"] as body:
        return await _stream_to_file(body, path)


async def download(s3: Any, where: S3Location, path_factory: Callable[[], str], limit: int = SINGLE_REQUEST_LIMIT) -> bytes | str:
    """An object's bytes when it is at most ``limit`` bytes; else the path of a file it was streamed to.

    A small object is read whole in one request (no temporary file, no thread hops of file I/O);
    a larger one goes to the file ``path_factory()`` names, a chunk at a time. The caller deletes
    that file.

    Raises:
        ResourceNotFoundError: the object does not exist.
    """
    answer = await _get_object(s3, where)
    async with answer["Body"] as body:
        if answer.get("ContentLength", limit + 1) <= limit:
            return await body.read()
        path = path_factory()
        await _stream_to_file(body, path)
    return path


async def _get_object(s3: Any, where: S3Location) -> dict[str, Any]:
    try:
        return await s3.get_object(Bucket=where.bucket, Key=where.key)
    except ClientError as e:
        raise_aws_error(e, "GetObject", where.uri)


async def _stream_to_file(body: Any, path: str) -> int:
    """Write a response body to ``path`` a chunk at a time, through aiofiles. Returns the bytes written."""
    written = 0
    async with aiofiles.open(path, "wb") as f:
        while chunk := await body.read(_READ_CHUNK):
            await f.write(chunk)
            written += len(chunk)
    return written


async def list_keys(s3: Any, where: S3Location) -> tuple[set[str], int]:
    """Every key under a prefix, and how many pages (ListObjectsV2 requests) that took.

    Raises:
        AWSError: translated from the S3 answer (``AccessDeniedError`` when listing is refused).
    """
    keys: set[str] = set()
    pages = 0
    paginator = s3.get_paginator("list_objects_v2")
    try:
        async for page in paginator.paginate(Bucket=where.bucket, Prefix=where.key):
            keys.update(o["Key"] for o in page.get("Contents", ()))
            pages += 1
    except ClientError as e:
        raise_aws_error(e, "ListObjectsV2", where.uri)
    return keys, pages


async def delete_prefix(s3: Any, where: S3Location) -> int:
    """Delete every object under a prefix. Returns how many were deleted."""
    deleted = 0
    paginator = s3.get_paginator("list_objects_v2")
    try:
        async for page in paginator.paginate(Bucket=where.bucket, Prefix=where.key):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                await s3.delete_objects(Bucket=where.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    except ClientError as e:
        raise_aws_error(e, "DeleteObjects", where.uri)
    return deleted


def _tagging(tags: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(tags)
