"""Ranged parallel download: ordered, bounded, pinned to one version, retried when cut off.

The fake clients below (`FakeS3`) cannot presign, so they exercise the reads through boto3's
`get_object`; the direct reads are tested further down against `tests.fakes.ranged_s3`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import ssl
import threading
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ResponseStreamingError

from task import download
from task.download import (
    DownloadError,
    ObjectChangedError,
    ObjectUnavailableError,
    Part,
    PresignedGet,
    describe_object,
    iter_chunks,
    plan_parts,
)
from task.frame import make_client
from task.objects import ObjectInfo
from task.settings import Settings
from tests.fakes.certificates import server_context
from tests.fakes.ranged_s3 import ETAG, VERSION_ID, Fault, RangedS3, Request
from tests.task.conftest import SMALL_PART, log_lines

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


# The direct reads: one thread, presigned ranged GETs straight into part buffers.

DIRECT_PART = 64 * 1024


@pytest.fixture
def aws_env(fake_aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def client_for(url: str, monkeypatch: pytest.MonkeyPatch) -> S3Client:
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    settings = Settings(bucket="b", key="k", version_id=None, result_bucket="b", result_prefix="")
    return make_client(settings)


def presigned(request: Request) -> bool:
    """Sent by the direct reads (a presigned URL), not by boto3 (an Authorization header)."""
    return "X-Amz-Signature" in request.query and "authorization" not in request.headers


def test_direct_reads_hand_out_every_byte_in_order_in_chunks_of_at_most_the_read_size(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(10 * DIRECT_PART + 123))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj = describe_object(client, "b", "k")
        chunks = list(iter_chunks(client, obj, DIRECT_PART, 3, read_size=20_000))
    assert b"".join(chunks) == server.data
    assert max(len(chunk) for chunk in chunks) <= 20_000
    assert len(server.gets()) == 11
    assert all(presigned(request) for request in server.gets())


def test_direct_reads_hand_out_read_only_views_of_their_buffers_only_where_asked(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(5 * DIRECT_PART + 7))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj = describe_object(client, "b", "k")
        copies = list(iter_chunks(client, obj, DIRECT_PART, 2, read_size=20_000))
        viewed = b""
        for view in iter_chunks(client, obj, DIRECT_PART, 2, read_size=20_000, views=True):
            assert isinstance(view, memoryview)
            assert view.readonly  # the processor cannot write into the download's buffers
            viewed += view
    assert all(type(chunk) is bytes for chunk in copies)
    assert b"".join(copies) == viewed == server.data


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_every_direct_range_is_pinned_to_the_version_read_at_the_start(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:
    server = RangedS3(os.urandom(3 * DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj = describe_object(client, "b", "k", VERSION_ID if versioned else None)
        obj = dataclasses.replace(obj, version_id=VERSION_ID if versioned else None)
        b"".join(iter_chunks(client, obj, DIRECT_PART, 2))
    for request in server.gets():
        if versioned:  # signed into the URL, so it cannot be dropped on the way
            assert request.query["versionId"] == [VERSION_ID]
            assert "if-match" not in request.headers
        else:
            assert "versionId" not in request.query
            assert request.headers["if-match"] == ETAG


def test_direct_reads_run_at_most_concurrency_ranges_ahead_of_the_processor(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(50 * DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        stream = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 3)
        first = next(stream)
        time.sleep(0.2)  # a slow processor: the connections have every chance to run ahead
        assert first == server.data[:DIRECT_PART]
        assert len(server.gets()) <= 3 + 1
        stream.close()
        requested = len(server.gets())
        time.sleep(0.1)
        assert len(server.gets()) == requested  # closing stopped it


def test_direct_reads_request_their_first_ranges_before_the_first_chunk_is_asked_for(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(8 * DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        stream = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 3)
        deadline = time.monotonic() + 5
        while len(server.gets()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.gets()) == 3  # while the processor would still be setting up
        assert b"".join(stream) == server.data


def test_kept_alive_connections_carry_later_ranges(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(12 * DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        assert b"".join(iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 2))
    gets = server.gets()
    assert len({request.connection for request in gets}) <= 3 < len(gets)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RangedS3(os.urandom(6 * DIRECT_PART))
    for first_byte in range(0, len(server.data), DIRECT_PART):
        server.fail_next(first_byte, Fault.CLOSE_WHEN_IDLE)
    with server.running() as url:
        client = client_for(url, monkeypatch)
        chunks = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 1)
        assert b"".join(chunks) == server.data
    assert all(presigned(request) for request in server.gets())
    assert "retry" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.CUT, "closed after"),
        (Fault.RESET, "connection failed"),
        (Fault.UNAVAILABLE, "HTTP 503"),
        (Fault.EXPIRED, "HTTP 403"),
        (Fault.STALL, "no bytes for"),
    ],
    ids=["cut-off", "reset", "slow-down", "expired-url", "stalled"],
)
def test_a_range_that_fails_directly_is_read_again_through_boto3(
    aws_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    reason: str,
) -> None:
    monkeypatch.setattr(download, "READ_TIMEOUT_SECONDS", 0.5)  # the stall is noticed soon
    server = RangedS3(os.urandom(6 * DIRECT_PART))
    server.fail_next(2 * DIRECT_PART, fault)
    with server.running() as url:
        client = client_for(url, monkeypatch)
        chunks = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 3)
        assert b"".join(chunks) == server.data
    third = [
        r for r in server.gets() if r.range == f"bytes={2 * DIRECT_PART}-{3 * DIRECT_PART - 1}"
    ]
    assert [presigned(request) for request in third] == [True, False]
    [retry] = [line for line in log_lines(capsys.readouterr().out) if line["event"] == "retry"]
    assert reason in retry["reason"]


def test_ranges_read_again_through_boto3_stay_within_the_part_buffers(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Memory is bounded by part_size x (concurrency + 1) whatever happens to the ranges: a range
    # read again through boto3 must land in its part's buffer, not beside it in new bytes. Parts
    # of 4 MiB, so that one part too many (4 MiB) stands well clear of what botocore's error path
    # allocates on the side (0.4-0.7 MiB here, whatever the part size).
    part, concurrency = 4 * 1024 * 1024, 3
    server = RangedS3(os.urandom(12 * part))
    for index in range(4, 12):  # once every buffer is made: 503 SlowDown on each later range
        server.fail_next(index * part, Fault.UNAVAILABLE)
    digest = hashlib.sha256()
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj = describe_object(client, "b", "k")
        client.get_object(Bucket="b", Key="k", Range="bytes=0-0")["Body"].read()  # boto3 set up
        tracemalloc.start()
        try:
            for chunk in iter_chunks(client, obj, part, concurrency, read_size=64 * 1024):
                digest.update(chunk)
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(server.data).hexdigest()
    retries = [line for line in log_lines(capsys.readouterr().out) if line["event"] == "retry"]
    assert len(retries) == 8
    assert peak < (concurrency + 1) * part + part // 2


def test_a_range_that_trickles_is_read_as_it_comes_and_not_taken_for_a_stall(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The range takes 0.8 s in 16 pieces, longer than the stall limit but never silent for
    # that long: its socket's low-water mark must give way and let each piece wake the reads.
    monkeypatch.setattr(download, "READ_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(download, "LOW_WATER_PATIENCE_SECONDS", 0.1)
    server = RangedS3(os.urandom(3 * DIRECT_PART))
    server.fail_next(DIRECT_PART, Fault.TRICKLE)
    with server.running() as url:
        client = client_for(url, monkeypatch)
        chunks = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 3)
        assert b"".join(chunks) == server.data
    assert [presigned(request) for request in server.gets()] == [True] * 3
    assert "retry" not in capsys.readouterr().out


def test_another_etag_mid_read_fails_as_changed_without_a_retry(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(6 * DIRECT_PART))
    server.fail_next(3 * DIRECT_PART, Fault.OTHER_ETAG)
    with server.running() as url:
        client = client_for(url, monkeypatch)
        chunks = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 2)
        with pytest.raises(ObjectChangedError, match="another-etag"):
            b"".join(chunks)


def test_a_proxy_in_the_environment_sends_reads_through_boto3(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj = describe_object(client, "b", "k")
        assert PresignedGet.for_client(client, obj) is not None
        monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
        assert PresignedGet.for_client(client, obj) is None
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert PresignedGet.for_client(client, obj) is not None


def test_direct_reads_over_tls_trust_what_the_client_trusts(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls, certificate = server_context(tmp_path)
    server = RangedS3(os.urandom(4 * DIRECT_PART + 5), tls=tls)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        chunks = iter_chunks(client, describe_object(client, "b", "k"), DIRECT_PART, 2)
        assert b"".join(chunks) == server.data
    assert url.startswith("https://")
    assert all(presigned(request) for request in server.gets())


def test_direct_reads_trust_only_the_bundle_botocore_trusts_not_the_system_store(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _tls, certificate = server_context(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate))
    client = client_for("https://127.0.0.1:9", monkeypatch)
    context = download._tls_context(client)
    # The one certificate of the bundle: the system's store (~140 CAs) is never loaded.
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]
    assert context.check_hostname


def test_direct_reads_over_tls_read_records_ahead(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _tls, certificate = server_context(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certificate))
    client = client_for("https://127.0.0.1:9", monkeypatch)
    tuned: list[ssl.SSLContext] = []
    monkeypatch.setattr(download, "enable_read_ahead", tuned.append)
    assert tuned == [download._tls_context(client)]


def test_the_object_is_described_by_a_presigned_head_on_the_connection_the_first_range_reuses(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(3 * DIRECT_PART))
    with server.running() as url:
        client = client_for(url, monkeypatch)
        obj, direct = download.describe(client, "b", "k")
        assert (obj.size, obj.etag, obj.version_id) == (len(server.data), ETAG, VERSION_ID)
        assert b"".join(iter_chunks(client, obj, DIRECT_PART, 2, direct=direct)) == server.data
    [head] = server.heads()
    assert presigned(head)
    # The server may log the second range first (it arrives on its own connection): find the
    # first range by its bytes.
    [first] = [get for get in server.gets() if get.range == f"bytes=0-{DIRECT_PART - 1}"]
    assert first.connection == head.connection
    # Every range pinned to the version the HEAD found, signed into its URL.
    assert all(get.query.get("versionId") == [VERSION_ID] for get in server.gets())


def test_a_head_that_is_not_a_plain_200_is_asked_again_through_boto3(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RangedS3(os.urandom(DIRECT_PART))
    server.fail_next_head(Fault.UNAVAILABLE)  # 503 SlowDown: botocore's retries apply
    with server.running() as url:
        obj, direct = download.describe(client_for(url, monkeypatch), "b", "k")
    assert obj.size == len(server.data)
    assert direct is None
    assert [presigned(head) for head in server.heads()] == [True, False]


def test_the_presigned_head_describes_the_object_as_botocores_head_does(
    s3: S3Client, versioned_bucket: str
) -> None:
    s3.put_object(
        Bucket=versioned_bucket,
        Key="in/report 2026 ü.csv",
        Body=b"a,b\n1,2\n",
        ContentType="text/csv",
        Metadata={"origin": "scanner-7", "batch": "42"},
    )
    obj, direct = download.describe(s3, versioned_bucket, "in/report 2026 ü.csv")
    assert direct is not None
    assert obj == describe_object(s3, versioned_bucket, "in/report 2026 ü.csv")
    assert obj.metadata == {"origin": "scanner-7", "batch": "42"}
