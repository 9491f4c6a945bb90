"""Parallel ranged reads of one object version, handed out as an ordered stream of chunks.

Memory stays bounded by part_size x (concurrency + 1) whatever the object's size: at most
`concurrency` parts are being fetched or waiting, plus the one being handed out. Every range
is pinned to one version (VersionId, or If-Match on the ETag when the bucket is unversioned),
and each response's ETag is checked again, so an overwrite mid-read fails loudly instead of
mixing two versions.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from task.objects import ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READ_SIZE = 1024 * 1024  # the chunk size handed to the processor
PART_ATTEMPTS = 3  # botocore retries requests; these also cover a body cut off mid-read
# Errors that botocore does not retry once the body is streaming: worth another attempt.
_TRANSIENT = (
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
_UNAVAILABLE_STATUS = {400, 403, 404, 405}  # bad version id, denied, missing, delete marker


class DownloadError(Exception):
    """Reading the object failed after retries (throttling, network, a misbehaving server)."""


class ObjectUnavailableError(DownloadError):
    """The object or version does not exist, or this task's role may not read it."""


class RequestRejectedError(DownloadError):
    """The SDK refused to send the request: the bucket name, key or version id is malformed."""


class ObjectChangedError(DownloadError):
    """The object was replaced while it was being read, so its bytes would mix versions."""


class DownloadCancelledError(DownloadError):
    """The stream was closed (task stopping, or the processor stopped early)."""


@dataclass(frozen=True)
class Part:
    """One byte range, both ends inclusive as in the HTTP Range header."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def plan_parts(size: int, part_size: int) -> list[Part]:
    """Split `size` bytes into consecutive ranges of `part_size` (the last one shorter)."""
    return [
        Part(index, start, min(start + part_size, size) - 1)
        for index, start in enumerate(range(0, size, part_size))
    ]


def describe_object(
    client: S3Client, bucket: str, key: str, version_id: str | None = None
) -> ObjectInfo:
    """HEAD the object (a given version, else the current one) and pin what will be read."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        head = client.head_object(**kwargs)
    except ClientError as error:
        raise _translate(error, bucket, key, version_id) from error
    except ParamValidationError as error:  # sent nowhere: retrying cannot help
        raise RequestRejectedError(f"s3://{bucket}/{key} cannot be asked for: {error}") from error
    except BotoCoreError as error:  # no credentials, endpoint unreachable after retries
        raise DownloadError(f"asking S3 about s3://{bucket}/{key} failed: {error}") from error
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=head["ContentLength"],
        etag=head["ETag"],
        # Unversioned buckets answer "null" or nothing; reads are then pinned by ETag instead.
        version_id=version_id or _real_version(head.get("VersionId")),
        content_type=head.get("ContentType"),
        last_modified=head.get("LastModified"),
        metadata=dict(head.get("Metadata", {})),
    )


def iter_chunks(
    client: S3Client,
    obj: ObjectInfo,
    part_size: int,
    concurrency: int,
    read_size: int = READ_SIZE,
) -> Generator[bytes, None, None]:
    """Yield the object's bytes in order while up to `concurrency` ranges download ahead.

    Closing the iterator (or an error) cancels the remaining ranges; raises DownloadError's
    subclasses for everything S3 can do wrong.
    """
    parts = deque(plan_parts(obj.size, part_size))
    cancel = threading.Event()
    window: deque[Future[list[bytes]]] = deque()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="range-get")
    try:
        while parts or window:
            while parts and len(window) < concurrency:
                part = parts.popleft()
                window.append(pool.submit(_fetch, client, obj, part, read_size, cancel))
            future = window.popleft()
            chunks = deque(future.result())
            del future  # so the finished part's memory goes as its chunks are handed out
            # Refill before handing out: downloads continue while the processor works.
            while parts and len(window) < concurrency:
                part = parts.popleft()
                window.append(pool.submit(_fetch, client, obj, part, read_size, cancel))
            while chunks:
                yield chunks.popleft()
    finally:
        cancel.set()
        # Queued ranges never start; running ones notice `cancel` within one read. Not waiting
        # for them: one stuck on a stalled connection would hold a stopping task for minutes
        # of botocore timeouts and retries (`python -m task` exits without joining them).
        pool.shutdown(wait=False, cancel_futures=True)


def _fetch(
    client: S3Client, obj: ObjectInfo, part: Part, read_size: int, cancel: threading.Event
) -> list[bytes]:
    pin: dict[str, Any] = {"VersionId": obj.version_id} if obj.version_id else {"IfMatch": obj.etag}
    last_error: Exception | None = None
    for _attempt in range(PART_ATTEMPTS):
        if cancel.is_set():
            raise DownloadCancelledError("the download was cancelled")
        try:
            response = client.get_object(
                Bucket=obj.bucket, Key=obj.key, Range=f"bytes={part.start}-{part.end}", **pin
            )
        except ClientError as error:
            raise _translate(error, obj.bucket, obj.key, obj.version_id, obj.etag) from error
        except _TRANSIENT as error:
            last_error = error
            continue
        except BotoCoreError as error:
            raise DownloadError(f"reading s3://{obj.bucket}/{obj.key} failed: {error}") from error
        body = response["Body"]
        try:
            _check_response(response, obj, part)
            chunks: list[bytes] = []
            received = 0
            while received < part.length:
                if cancel.is_set():
                    raise DownloadCancelledError("the download was cancelled")
                data = body.read(min(read_size, part.length - received))
                if not data:
                    break
                chunks.append(data)
                received += len(data)
            if received == part.length:
                return chunks
            last_error = DownloadError(
                f"range {part.start}-{part.end} ended after {received} of {part.length} bytes"
            )
        except _TRANSIENT as error:
            last_error = error
        finally:
            body.close()
    raise DownloadError(
        f"reading bytes {part.start}-{part.end} of s3://{obj.bucket}/{obj.key} failed "
        f"{PART_ATTEMPTS} times; last error: {last_error}"
    )


def _check_response(response: Any, obj: ObjectInfo, part: Part) -> None:
    # S3 honours VersionId and If-Match; checking again costs nothing and also guards against
    # an S3-compatible server that ignores either (or the Range, answering the whole object).
    if response.get("ETag") != obj.etag:
        raise ObjectChangedError(
            f"s3://{obj.bucket}/{obj.key} changed while it was read "
            f"(ETag {obj.etag} at start, {response.get('ETag')} now)"
        )
    expected_range = f"bytes {part.start}-{part.end}/{obj.size}"
    if response.get("ContentRange") is None:
        raise DownloadError(
            f"asked for {expected_range!r} of s3://{obj.bucket}/{obj.key}, got no Content-Range: "
            "the server ignored the Range header, and ranged reads need one that honours it"
        )
    if response.get("ContentRange") != expected_range:
        raise DownloadError(
            f"asked for {expected_range!r} of s3://{obj.bucket}/{obj.key}, "
            f"got {response.get('ContentRange')!r}"
        )


def _translate(
    error: ClientError,
    bucket: str,
    key: str,
    version_id: str | None,
    etag: str | None = None,
) -> DownloadError:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = error.response.get("Error", {}).get("Code", "?")
    where = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    if status == 412 or code == "PreconditionFailed":
        return ObjectChangedError(
            f"{where} changed while it was read (its ETag is no longer {etag})"
        )
    if status in _UNAVAILABLE_STATUS:
        return ObjectUnavailableError(f"{where} cannot be read: {code} (HTTP {status})")
    return DownloadError(f"reading {where} failed: {code} (HTTP {status}): {error}")


def _real_version(version_id: str | None) -> str | None:
    return version_id if version_id and version_id != "null" else None
