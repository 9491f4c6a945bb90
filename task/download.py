"""Parallel ranged reads of one object version, handed out as an ordered stream of chunks.

Memory stays bounded by part_size x (concurrency + 1) whatever the object's size: at most
`concurrency` parts are being fetched or waiting, plus the one being handed out. Every range
is pinned to one version (VersionId, or If-Match on the ETag when the bucket is unversioned),
and each response's ETag is checked again, so an overwrite mid-read fails loudly instead of
mixing two versions.

Two ways to read the ranges, with the same guarantees:

- Direct (the default). The task is billed per vCPU-second and is CPU-bound at every size,
  so the download must cost little CPU per byte. One thread multiplexes the ranges' HTTP
  connections with a selector and receives each body straight into a reused part buffer
  (`task.http_ranges`), waking once per MiB that has arrived: one copy by the kernel (and one
  out of the TLS layer), one into each 1 MiB chunk, and no thread hand-offs. The request is a
  presigned GetObject URL made by the boto3 client, so the endpoint, addressing, credentials
  and signature are boto3's. Any surprise on a range (an error status, a refused or reset
  connection, a stall) reads that range again through boto3 (`_fetch`), so botocore's
  retries, errors and messages apply exactly as before. The object is described the same
  way, by a presigned HEAD on the connection the first range then reuses (`describe`),
  and through boto3's `head_object` on any answer but a plain 200.
- Through boto3's `get_object` in a thread pool, when a proxy or a client certificate is
  configured (the direct reads use neither) or the client cannot presign.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
from botocore.httpsession import get_cert_path
from botocore.utils import parse_timestamp

from task.botocore_data import ca_folder_for
from task.http_ranges import (
    Endpoint,
    RangeFailed,
    RangeRead,
    ResponseHead,
    enable_read_ahead,
    is_reusable,
    request_head,
)
from task.http_ranges import format_request as format_range_request
from task.logs import log
from task.objects import ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READ_SIZE = 1024 * 1024  # the chunk size handed to the processor
PART_ATTEMPTS = 3  # botocore retries requests; these also cover a body cut off mid-read
CONNECT_TIMEOUT_SECONDS = 10
# A stalled range should fail (and be retried) well inside Fargate's 30 s stop timeout.
READ_TIMEOUT_SECONDS = 20
# A range not heard from this long (it has not filled its socket's low-water mark, see
# `task.http_ranges`) is woken by every byte from then on: a slow range is still read as it
# comes, and a stall is timed from its last byte.
LOW_WATER_PATIENCE_SECONDS = 0.5
# Presigned URLs for the direct reads: valid 15 minutes, renewed after 5, so credentials
# that rotate meanwhile (the task role's) are picked up long before a URL expires.
PRESIGN_EXPIRES_SECONDS = 900
PRESIGN_RENEW_SECONDS = 300
# Errors that botocore does not retry once the body is streaming: worth another attempt.
_TRANSIENT = (
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
_UNAVAILABLE_STATUS = {400, 403, 404, 405}  # bad version id, denied, missing, delete marker
METADATA_PREFIX = "x-amz-meta-"  # user metadata, as HeadObject's Metadata


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


@dataclass(frozen=True)
class DirectHead:
    """The object as a HEAD over a direct-read connection described it; the connection kept."""

    obj: ObjectInfo
    tls: ssl.SSLContext | None
    connection: socket.socket | None  # kept alive for the first range, when the server allows


def describe(
    client: S3Client, bucket: str, key: str, version_id: str | None = None
) -> tuple[ObjectInfo, DirectHead | None]:
    """HEAD the object, straight over a connection the direct reads then reuse where they can.

    botocore's own HEAD would cost a connection of its own: ~0.03 CPU-s at every start with
    its CA bundle, for a request the direct reads can sign and send as they sign ranges. Any
    answer but a plain 200 (missing, denied, redirected, throttled) or a failed connection
    asks again through botocore (`describe_object`), whose retries and errors then apply.
    """
    direct = _direct_head(client, bucket, key, version_id)
    if direct is not None:
        return direct.obj, direct
    return describe_object(client, bucket, key, version_id), None


def _direct_head(
    client: S3Client, bucket: str, key: str, version_id: str | None
) -> DirectHead | None:
    presigned = PresignedGet.for_params(client, _params(bucket, key, version_id), "head_object")
    if presigned is None:
        return None
    try:
        sock = presigned.endpoint.connect(CONNECT_TIMEOUT_SECONDS)
    except RangeFailed:
        return None
    try:
        head = request_head(
            sock, presigned.target(), presigned.endpoint.host_header, READ_TIMEOUT_SECONDS
        )
        headers = head.headers
        if head.status != 200 or "etag" not in headers:
            raise RangeFailed(f"HTTP {head.status}")  # noqa: TRY301 - one way out for all
        obj = ObjectInfo(
            bucket=bucket,
            key=key,
            size=int(headers["content-length"]),
            etag=headers["etag"],
            version_id=version_id or _real_version(headers.get("x-amz-version-id")),
            content_type=headers.get("content-type"),
            # As botocore parses them for HeadObject, so a processor sees the same values.
            last_modified=parse_timestamp(headers["last-modified"])
            if "last-modified" in headers
            else None,
            metadata={
                name.removeprefix(METADATA_PREFIX): value
                for name, value in headers.items()
                if name.startswith(METADATA_PREFIX)
            },
        )
    except (RangeFailed, KeyError, ValueError):
        sock.close()
        return None
    if not head.keep_alive:
        sock.close()
    return DirectHead(obj, presigned.tls, sock if head.keep_alive else None)


def _params(bucket: str, key: str, version_id: str | None) -> dict[str, str]:
    params = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    return params


class ChunkStream(Protocol):
    """The object's bytes in order, as chunks; close() stops the reads still running."""

    def __iter__(self) -> Iterator[bytes]: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None: ...


def iter_chunks(
    client: S3Client,
    obj: ObjectInfo,
    part_size: int,
    concurrency: int,
    read_size: int = READ_SIZE,
    *,
    on_first_request: Callable[[], None] | None = None,
    direct: DirectHead | None = None,
    views: bool = False,
) -> ChunkStream:
    """The object's bytes in order, while up to `concurrency` ranges download ahead.

    With `views`, the direct reads hand out read-only memoryviews of their part buffers, each
    valid until the next chunk is asked for (`task.objects.takes_views`), instead of copies.

    The direct reads request their first ranges at once, so the bytes arrive while the
    processor is still being set up (importing numpy, say). `on_first_request` is called as
    the first range is requested (the frame logs the CPU spent until then); `direct` is what
    `describe` found, whose connection and TLS settings it reuses. Closing the stream
    (or an error) cancels the remaining ranges; raises DownloadError's subclasses for
    everything S3 can do wrong.
    """
    presigned = None
    if obj.size and direct is not None:
        params = _params(obj.bucket, obj.key, obj.version_id)
        with contextlib.suppress(RangeFailed, BotoCoreError):
            presigned = PresignedGet(client, params, direct.tls)
    elif obj.size:
        presigned = PresignedGet.for_client(client, obj)
    idle = [direct.connection] if direct is not None and direct.connection else []
    if presigned is None:
        for sock in idle:
            sock.close()
        if on_first_request is not None:
            on_first_request()
        return _threaded_chunks(client, obj, part_size, concurrency, read_size)
    reads = _DirectReads(
        client,
        obj,
        presigned,
        part_size=part_size,
        concurrency=concurrency,
        read_size=read_size,
        on_first_request=on_first_request,
        idle=idle,
        views=views,
    )
    reads.start()
    return reads


class PresignedGet:
    """One request of the object (GetObject by default) as a presigned URL for direct reads,
    renewed before it expires."""

    def __init__(
        self,
        client: S3Client,
        params: dict[str, str],
        tls: ssl.SSLContext | None,
        operation: str = "get_object",
    ) -> None:
        self._client = client
        self._params = params
        self._operation = operation
        self.tls = tls
        self._made_at = -float("inf")
        self._target = ""
        self.endpoint = self._renew()

    @classmethod
    def for_client(cls, client: S3Client, obj: ObjectInfo) -> PresignedGet | None:
        """Direct reads of `obj` for this client's settings, or None where only boto3 can read."""
        return cls.for_params(client, _params(obj.bucket, obj.key, obj.version_id))

    @classmethod
    def for_params(
        cls, client: S3Client, params: dict[str, str], operation: str = "get_object"
    ) -> PresignedGet | None:
        """`operation` with `params`, presigned, or None where only boto3 can send it."""
        meta = getattr(client, "meta", None)
        config = getattr(meta, "config", None)
        if getattr(config, "proxies", None) or getattr(config, "client_cert", None):
            return None
        endpoint_url = str(getattr(meta, "endpoint_url", ""))
        if not hasattr(client, "generate_presigned_url"):
            return None
        scheme = endpoint_url.partition("://")[0]
        try:
            tls = _tls_context(client) if scheme == "https" else None
            presigned = cls(client, params, tls, operation)
        except (RangeFailed, BotoCoreError, ssl.SSLError, OSError):
            return None  # boto3 will read it, and report whatever is wrong in its words
        proxy = urllib.request.getproxies_environment().get(scheme)
        if proxy and not urllib.request.proxy_bypass(presigned.endpoint.host):
            return None  # botocore honours HTTP(S)_PROXY; the direct reads do not
        return presigned

    def target(self) -> str:
        """The request target (path and signed query) to send to `endpoint`."""
        if time.monotonic() - self._made_at > PRESIGN_RENEW_SECONDS:
            try:
                endpoint = self._renew()
            except BotoCoreError as error:  # credentials that failed to refresh, say
                raise RangeFailed(f"presigning failed: {error}") from error
            if endpoint != self.endpoint:
                raise RangeFailed(f"the endpoint moved to {endpoint.host_header}")
        return self._target

    def _renew(self) -> Endpoint:
        url = self._client.generate_presigned_url(
            self._operation, Params=self._params, ExpiresIn=PRESIGN_EXPIRES_SECONDS
        )
        endpoint, self._target = Endpoint.from_url(url, self.tls)
        self._made_at = time.monotonic()
        return endpoint


def _tls_context(client: S3Client) -> ssl.SSLContext:
    """TLS that verifies as the client's own connections do (AWS_CA_BUNDLE, verify=...)."""
    # botocore keeps what it resolved (argument, AWS_CA_BUNDLE, config file, certifi) on the
    # client's HTTP session; the same value makes the same trust decision here.
    http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    verify = getattr(http_session, "_verify", True)
    # create_default_context() without the system's store: loading it costs ~30 ms of CPU at
    # every start, for certificates botocore does not trust either (it uses its own bundle).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    enable_read_ahead(context)
    context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    location = get_cert_path(verify)
    if not location:
        context.load_default_certs()  # the system's trust store
        return context
    # The same bundle, cut at image build into one file per certificate: OpenSSL then reads
    # only the root a handshake needs, not all of them (~22 ms of CPU for botocore's own).
    location = str(ca_folder_for(location) or location)
    if os.path.isdir(location):
        context.load_verify_locations(capath=location)
    else:
        context.load_verify_locations(cafile=location)
    return context


@dataclass
class _InFlight:
    part: Part
    buffer: bytearray
    read: RangeRead
    reused: bool  # on a kept-alive connection, which the server may have closed meanwhile
    stalled_for: float = 0.0  # seconds spent waiting on the selector with no byte from it


class _DirectReads:
    """Ranges read by one thread over non-blocking connections; see the module docstring."""

    def __init__(
        self,
        client: S3Client,
        obj: ObjectInfo,
        presigned: PresignedGet,
        *,
        part_size: int,
        concurrency: int,
        read_size: int,
        on_first_request: Callable[[], None] | None = None,
        idle: list[socket.socket] | None = None,
        views: bool = False,
    ) -> None:
        self._client = client
        self._views = views
        self._on_first_request = on_first_request
        self._obj = obj
        self._presigned = presigned
        self._parts = deque(plan_parts(obj.size, part_size))
        self._part_count = len(self._parts)
        self._part_size = part_size
        self._concurrency = concurrency
        self._read_size = read_size
        self._selector = selectors.DefaultSelector()
        self._in_flight: dict[int, _InFlight] = {}
        self._ready: dict[int, bytearray] = {}  # part buffers, received whichever way
        self._free: list[bytearray] = []
        self._idle: list[socket.socket] = list(idle or [])  # kept-alive connections
        self._pin = {} if obj.version_id else {"If-Match": obj.etag}  # VersionId is signed in
        self._never_cancelled = threading.Event()
        self._chunks = self._generate()

    def start(self) -> None:
        """Send the first `concurrency` requests."""
        self._start_reads()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._release()

    def _release(self) -> None:
        for flight in self._in_flight.values():
            flight.read.close()
        for sock in self._idle:
            sock.close()
        self._in_flight.clear()
        self._idle.clear()
        self._selector.close()

    def _generate(self) -> Generator[bytes, None, None]:
        try:
            for index in range(self._part_count):
                self._start_reads()
                while index not in self._ready:
                    self._pump(block=True)
                ready = self._ready.pop(index)
                length = min(self._part_size, self._obj.size - index * self._part_size)
                # Not released after: a processor may keep a view past its time (its bytes
                # then change, as documented), but must not make releasing it fail.
                body = memoryview(ready).toreadonly()
                for offset in range(0, length, self._read_size):
                    view = body[offset : min(offset + self._read_size, length)]
                    chunk = view if self._views else view.tobytes()
                    self._pump(block=False)  # keep connections draining meanwhile
                    yield chunk  # type: ignore[misc] # memoryviews only where asked for
                self._free.append(ready)
        finally:
            self._release()

    def _start_reads(self) -> None:
        while self._parts and len(self._in_flight) + len(self._ready) < self._concurrency:
            part = self._parts.popleft()
            buffer = self._free.pop() if self._free else bytearray(self._part_size)
            self._start(part, buffer, fresh=False)

    def _start(self, part: Part, buffer: bytearray, fresh: bool) -> None:
        endpoint = self._presigned.endpoint
        sock = self._reusable_connection() if not fresh else None
        reused = sock is not None
        try:
            if sock is None:
                sock = endpoint.connect(CONNECT_TIMEOUT_SECONDS)
            request = format_range_request(
                self._presigned.target(), endpoint.host_header, part.start, part.end, self._pin
            )
            read = RangeRead(
                sock,
                request,
                memoryview(buffer)[: part.length],
                lambda head: self._check_head(head, part),
                CONNECT_TIMEOUT_SECONDS,
            )
        except RangeFailed as failure:
            if sock is not None:
                sock.close()
            if reused:  # the server closed it while idle: not a failure of the range
                self._start(part, buffer, fresh=True)
            else:
                self._fall_back(part, buffer, failure)
            return
        if self._on_first_request is not None:
            self._on_first_request()
            self._on_first_request = None
        flight = _InFlight(part, buffer, read, reused)
        self._in_flight[part.index] = flight
        self._selector.register(sock, selectors.EVENT_READ, flight)

    def _reusable_connection(self) -> socket.socket | None:
        while self._idle:
            candidate = self._idle.pop()
            if is_reusable(candidate):
                return candidate
            candidate.close()
        return None

    def _check_head(self, head: ResponseHead, part: Part) -> None:
        response = {
            "ETag": head.headers.get("etag"),
            "ContentRange": head.headers.get("content-range"),
        }
        _check_response(response, self._obj, part)

    def _pump(self, block: bool) -> None:
        """Take what has arrived on every connection; wait for some first if `block`."""
        timeout = 0.0
        if block:  # until the next range is due to be hurried, or to be called stalled
            timeout = min(
                (
                    (LOW_WATER_PATIENCE_SECONDS if flight.read.patient else READ_TIMEOUT_SECONDS)
                    - flight.stalled_for
                    for flight in self._in_flight.values()
                ),
                default=READ_TIMEOUT_SECONDS,
            )
            timeout = max(0.0, timeout)
        began = time.monotonic()
        events = self._selector.select(timeout)
        waited = time.monotonic() - began
        heard: set[int] = set()
        for key, _mask in events:
            flight: _InFlight = key.data
            heard.add(flight.part.index)
            try:
                complete = flight.read.on_readable()
            except RangeFailed as failure:
                self._retire(flight)
                if flight.reused and not flight.read.answered:
                    self._start(flight.part, flight.buffer, fresh=True)  # it had gone stale
                else:
                    self._fall_back(flight.part, flight.buffer, failure)
                continue
            flight.stalled_for = 0.0
            if complete:
                self._retire(flight)
                head = flight.read.head
                if head is not None and head.keep_alive:
                    self._idle.append(flight.read.sock)
                else:
                    flight.read.close()
                self._ready[flight.part.index] = flight.buffer
        # Only time spent listening counts towards a stall: a slow processor is not one.
        for flight in list(self._in_flight.values()):
            if flight.part.index in heard:
                continue
            flight.stalled_for += waited
            if flight.stalled_for >= LOW_WATER_PATIENCE_SECONDS:
                flight.read.hurry()
            if flight.stalled_for >= READ_TIMEOUT_SECONDS:
                self._retire(flight)
                flight.read.close()
                self._fall_back(
                    flight.part,
                    flight.buffer,
                    RangeFailed(f"no bytes for {READ_TIMEOUT_SECONDS} s"),
                )
        self._start_reads()

    def _retire(self, flight: _InFlight) -> None:
        del self._in_flight[flight.part.index]
        self._selector.unregister(flight.read.sock)

    def _fall_back(self, part: Part, buffer: bytearray, failure: RangeFailed) -> None:
        """Read the range through boto3: its retries, and its errors if it fails too.

        Into the part's own buffer: a fallback that kept boto3's chunks beside it would hold
        another part's worth of memory for every range retried at once (5 ranges, 30 MiB).
        """
        log(
            "retry",
            level="warning",
            bytes=f"{part.start}-{part.end}",
            reason=str(failure),
            retry="through boto3",
        )
        _fetch(
            self._client,
            self._obj,
            part,
            self._read_size,
            self._never_cancelled,
            into=memoryview(buffer)[: part.length],
        )
        self._ready[part.index] = buffer


def _threaded_chunks(
    client: S3Client, obj: ObjectInfo, part_size: int, concurrency: int, read_size: int
) -> Generator[bytes, None, None]:
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
    client: S3Client,
    obj: ObjectInfo,
    part: Part,
    read_size: int,
    cancel: threading.Event,
    *,
    into: memoryview | None = None,
) -> list[bytes]:
    """The range through boto3, retried when cut off: as chunks, or copied `into` a buffer.

    With `into` (the range's own part buffer) the list returned is empty.
    """
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
            chunks, received = _read_body(body, part.length, read_size, cancel, into)
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


def _read_body(
    body: Any, length: int, read_size: int, cancel: threading.Event, into: memoryview | None
) -> tuple[list[bytes], int]:
    """Up to `length` bytes of a streaming body, as chunks or into `into`; and how many came."""
    chunks: list[bytes] = []
    received = 0
    while received < length:
        if cancel.is_set():
            raise DownloadCancelledError("the download was cancelled")
        data = body.read(min(read_size, length - received))
        if not data:
            break
        if into is None:
            chunks.append(data)
        else:
            into[received : received + len(data)] = data
        received += len(data)
    return chunks, received


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
