"""The reference readers the task bench runs beside `python -m task`, and its no-op processor.

Each reader is run as its own process, `python bench/readers.py READER BUCKET KEY`, under the
same CPU quota as the job, against the same server (AWS_* variables point at it). Each
imports only what it uses, so no reader's start-up carries this bench's imports:

- `naive`: the seed's approach. One `get_object`, its body read in 1 MiB chunks, SHA-256 and
  `bytes.count` on each: one connection, so at most one connection's throughput.
- `awscrt`: aws-c-s3 (the engine behind Mountpoint for S3 and boto3's CRT transfers) through
  the `awscrt` package: parallel ranged GETs in C, the body handed to an in-order callback
  that does the default processor's own work (`task.processor.Digest`), with 8 MiB parts and
  its smallest memory limit.

`consume` is a processor for `TASK_PROCESSOR=readers:consume` (with bench/ on PYTHONPATH): it
only takes the chunks, so the job's figure with it is the frame's own cost.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from task.objects import ObjectInfo

CHUNK = 1024 * 1024


def consume(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """Take every chunk and do nothing with it: what every processor pays for the frame."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
    return {"size": size}


def naive(bucket: str, key: str) -> str:
    import hashlib

    import boto3

    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    lines = 0
    for chunk in body.iter_chunks(CHUNK):
        digest.update(chunk)
        lines += chunk.count(b"\n")
    return f"{digest.hexdigest()} {lines}"


def awscrt(bucket: str, key: str) -> str:
    import os
    import threading
    from urllib.parse import quote, urlsplit

    from awscrt.auth import AwsCredentialsProvider
    from awscrt.http import HttpHeaders, HttpRequest
    from awscrt.io import ClientTlsContext, TlsContextOptions
    from awscrt.s3 import (
        S3Client,
        S3RequestTlsMode,
        S3RequestType,
        create_default_s3_signing_config,
    )

    from task.processor import Digest

    endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL"])  # the bench's server, path-style
    region = os.environ.get("AWS_REGION", "us-east-1")
    tls = None
    if os.environ.get("AWS_CA_BUNDLE"):  # the bench's own certificate, as botocore trusts it
        options = TlsContextOptions()
        options.override_default_trust_store_from_path(None, os.environ["AWS_CA_BUNDLE"])
        tls = ClientTlsContext(options).new_connection_options()
    client = S3Client(
        region=region,
        tls_mode=S3RequestTlsMode.DISABLED if endpoint.scheme == "http" else None,
        tls_connection_options=tls,
        signing_config=create_default_s3_signing_config(
            region=region, credential_provider=AwsCredentialsProvider.new_default_chain()
        ),
        part_size=8 * CHUNK,
        # Its smallest allowed: by default it buffers up to GiBs (RSS near 400 MiB), and
        # faulting those pages in cost it ~0.3 CPU-s per GiB more here.
        memory_limit=256 * CHUNK,
    )
    digests: list[Digest] = []
    offsets = [0]
    failure: list[BaseException] = []

    def on_headers(status_code: int, headers: list[tuple[str, str]], **_kwargs: Any) -> None:
        length = {name.lower(): value for name, value in headers}.get("content-length")
        digests.append(Digest(expected_size=int(length or 0)))  # as the default processor

    def on_body(chunk: bytes, offset: int, **_kwargs: Any) -> None:
        if offset != offsets[0]:  # aws-c-s3 promises order; a reference must not assume it
            raise RuntimeError(f"body at offset {offset}, expected {offsets[0]}")
        offsets[0] += len(chunk)
        digests[0].update(chunk)

    finished = threading.Event()

    def on_done(error: BaseException | None = None, **_kwargs: Any) -> None:
        if error is not None:
            failure.append(error)
        finished.set()

    request = HttpRequest(
        "GET",
        f"/{quote(bucket)}/{quote(key)}",
        HttpHeaders([("Host", str(endpoint.netloc))]),
    )
    client.make_request(
        type=S3RequestType.GET_OBJECT,
        request=request,
        on_headers=on_headers,
        on_body=on_body,
        on_done=on_done,
    )
    finished.wait()
    if failure:
        raise failure[0]
    return f"{digests[0].summary()['sha256']} {digests[0].lines} ({offsets[0]} bytes)"


READERS = {"naive": naive, "awscrt": awscrt}

if __name__ == "__main__":
    reader, bucket, key = sys.argv[1:4]
    print(READERS[reader](bucket, key), file=sys.stderr)
