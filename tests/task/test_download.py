"""Ranged parallel download: ordered, bounded, pinned to one version, retried when cut off."""

from __future__ import annotations

import io
import os
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ResponseStreamingError

from task.download import (
    DownloadError,
    ObjectChangedError,
    ObjectUnavailableError,
    Part,
    describe_object,
    iter_chunks,
    plan_parts,
)
from task.objects import ObjectInfo
from tests.task.conftest import SMALL_PART

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class FakeBody:
    def __init__(self, data: bytes, fail_first_read: bool = False) -> None:
        self._data = io.BytesIO(data)
        self._fail = fail_first_read

    def read(self, amount: int) -> bytes:
        if self._fail:
            self._fail = False
            raise ResponseStreamingError(error="connection reset mid-body")
        return self._data.read(amount)

    def close(self) -> None:
        self._data.close()


class FakeS3:
    """Serves ranges of one object and counts requests, to watch the download from outside."""

    def __init__(self, data: bytes, cut_off_parts: frozenset[int] = frozenset()) -> None:
        self.data = data
        self.requests: list[str] = []
        self._cut_off = set(cut_off_parts)
        self._lock = threading.Lock()

    def get_object(self, *, Bucket: str, Key: str, Range: str, **pin: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        start, end = (int(n) for n in Range.removeprefix("bytes=").split("-"))
        with self._lock:
            self.requests.append(Range)
            cut = start in self._cut_off
            self._cut_off.discard(start)
        return {
            "Body": FakeBody(self.data[start : end + 1], fail_first_read=cut),
            "ETag": '"etag"',
            "ContentRange": f"bytes {start}-{end}/{len(self.data)}",
        }


def fake_info(size: int) -> ObjectInfo:
    return ObjectInfo(bucket="b", key="k", size=size, etag='"etag"', version_id=None)


def test_parts_cover_the_object_exactly_with_a_shorter_last_part() -> None:
    assert plan_parts(10, 4) == [Part(0, 0, 3), Part(1, 4, 7), Part(2, 8, 9)]
    assert plan_parts(8, 4) == [Part(0, 0, 3), Part(1, 4, 7)]
    assert plan_parts(0, 4) == []


def test_chunks_arrive_in_order_whatever_order_the_parts_finish_in() -> None:
    data = os.urandom(40 * 1000 + 123)
    client = FakeS3(data)
    chunks = list(iter_chunks(cast("S3Client", client), fake_info(len(data)), 1000, 8, 300))
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= 300


def test_the_download_runs_at_most_concurrency_parts_ahead_of_the_processor() -> None:
    data = os.urandom(50 * 1000)
    client = FakeS3(data)
    stream = iter_chunks(cast("S3Client", client), fake_info(len(data)), 1000, 3)
    first = next(stream)
    time.sleep(0.2)  # a slow processor: the workers have every chance to run ahead
    assert first == data[:1000]
    assert len(client.requests) <= 3 + 1
    stream.close()


def test_closing_the_stream_early_stops_requesting_parts() -> None:
    data = os.urandom(100 * 1000)
    client = FakeS3(data)
    stream = iter_chunks(cast("S3Client", client), fake_info(len(data)), 1000, 2)
    next(stream)
    stream.close()
    requested = len(client.requests)
    time.sleep(0.1)
    assert len(client.requests) == requested <= 2 + 1


def test_a_body_cut_off_mid_read_is_fetched_again() -> None:
    data = os.urandom(5000)
    client = FakeS3(data, cut_off_parts=frozenset({2000}))
    chunks = iter_chunks(cast("S3Client", client), fake_info(len(data)), 1000, 2)
    assert b"".join(chunks) == data
    assert client.requests.count("bytes=2000-2999") == 2


def test_a_multipart_sized_object_is_streamed_whole_from_s3(s3: S3Client, bucket: str) -> None:
    data = os.urandom(17 * SMALL_PART + 5)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    obj = describe_object(s3, bucket, "big.bin")
    assert obj.size == len(data)
    assert b"".join(iter_chunks(s3, obj, SMALL_PART, 4)) == data


def test_an_unversioned_object_overwritten_mid_read_fails_instead_of_mixing(
    s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"a" * (20 * SMALL_PART))
    stream = iter_chunks(s3, describe_object(s3, bucket, "k"), SMALL_PART, 2)
    assert next(stream) == b"a" * SMALL_PART
    s3.put_object(Bucket=bucket, Key="k", Body=b"b" * (20 * SMALL_PART))
    seen: list[bytes] = []
    with pytest.raises(ObjectChangedError, match="changed while it was read"):
        seen.extend(stream)
    assert all(set(chunk) == {ord("a")} for chunk in seen)


def test_a_missing_object_or_version_is_unavailable(s3: S3Client, versioned_bucket: str) -> None:
    with pytest.raises(ObjectUnavailableError, match="404"):
        describe_object(s3, versioned_bucket, "absent")
    s3.put_object(Bucket=versioned_bucket, Key="k", Body=b"x")
    with pytest.raises(ObjectUnavailableError, match="version"):
        describe_object(s3, versioned_bucket, "k", "not-a-version-of-k")


class RangeIgnoringS3(FakeS3):
    """An S3-compatible server that answers every ranged GET with the whole object."""

    def get_object(self, *, Bucket: str, Key: str, Range: str, **pin: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"Body": FakeBody(self.data), "ETag": '"etag"'}


def test_a_server_that_ignores_ranges_is_named_as_the_problem() -> None:
    data = os.urandom(3000)
    client = RangeIgnoringS3(data)
    with pytest.raises(DownloadError, match="ignored the Range header"):
        b"".join(iter_chunks(cast("S3Client", client), fake_info(len(data)), 1000, 2))
