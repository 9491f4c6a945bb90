"""moto on 127.0.0.1 for benchmarks, every connection paced like S3, and the bench's helpers.

The bench of record puts nginx in front of it (bench/nginx_s3.py): moto answers HEAD, PUT and
whatever nginx does not serve from disk, paced the same way.

Real S3 gives one connection about 85-90 MB/s (S3 user guide, "Performance design patterns"),
so a reader goes faster only by reading ranges in parallel. Here the pacing is done inside
the server, where each connection writes its responses (no proxy, no extra copy), so it
costs the reader nothing and runs wherever the server runs: outside a reader's CPU quota.
There is no aggregate cap.

moto keeps its own habits, which every reader meets alike: each response closes its
connection (werkzeug's server has no keep-alive), so every request pays for a new one. Two of
its costs that have nothing to do with S3 are removed (see `share_stored_bytes_in_moto` and
`list_moto_modules_once`), since they would only take CPU from the readers on the same cores.
"""

from __future__ import annotations

import io
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

MIB = 1024 * 1024
MB = 1_000_000
PIECE = 1024 * 1024  # bytes sent per pacing step: 11.7 ms at 90 MB/s


class PatternReader(io.RawIOBase):
    """`size` bytes of a repeated random block, produced as read: nothing held whole."""

    def __init__(self, size: int, newline_every: int | None = 100) -> None:
        block = bytearray(os.urandom(MIB + 7))  # an odd length, so parts never repeat exactly
        if newline_every:  # text-like: lines for the readers to count
            block[newline_every - 1 :: newline_every] = b"\n" * len(
                range(newline_every - 1, len(block), newline_every)
            )
        self._block = bytes(block)
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._position)
        written = 0
        while written < wanted:
            offset = (self._position + written) % len(self._block)
            piece = self._block[offset : offset + wanted - written]
            buffer[written : written + len(piece)] = piece
            written += len(piece)
        self._position += written
        return written


class PacedWriter(io.BufferedIOBase):
    """A connection's output, sent at most `bytes_per_second` from its first byte.

    Writes go out in PIECE-sized slices of the caller's buffer, each when the average since
    the connection's first byte allows it: no copies, one pacing clock per connection.
    """

    def __init__(self, sock: socket.socket, bytes_per_second: float, meter: Meter) -> None:
        self._sock = sock
        self._rate = bytes_per_second
        self._meter = meter
        self._began: float | None = None
        self._sent = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with memoryview(data) as view:
            if self._began is None:
                self._began = time.monotonic()
            for offset in range(0, view.nbytes, PIECE):
                delay = self._began + self._sent / self._rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                piece = view[offset : offset + PIECE]
                self._sock.sendall(piece)
                self._sent += piece.nbytes
            self._meter.add(view.nbytes)
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class Meter:
    """What the server sent, over every connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0
        self.bytes_sent = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def connected(self) -> None:
        with self._lock:
            self.connections += 1


def share_stored_bytes_in_moto() -> None:
    """Have moto hand out its stored bytes without a copy, so a range costs its own length.

    moto serves a ranged GET by reading the whole object and slicing it: each 8 MiB range of
    a 1 GiB object would cost the server a 1 GiB copy (real S3 serves a range in proportion
    to the range). Objects are kept in memory and shared instead.
    """
    from moto.s3.models import FakeKey

    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(4 * 1024 * MIB)  # keep keys in memory

    def value(self: Any) -> bytes:
        with self.lock:
            # BytesIO.getvalue() shares its buffer once sized; read() would copy it all.
            return bytes(self._value_buffer._file.getvalue())

    patched = cast("Any", FakeKey)
    patched.value = property(value, patched.value.fset)


def list_moto_modules_once() -> None:
    """moto lists its own package folder (~170 stat calls) on every request to find the
    backend for a host; the list never changes while it runs, so it is made once.

    That is ~40% of moto's CPU per request, taken from the same cores the readers use.
    """
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    cast("Any", backends).list_of_moto_modules = lambda: modules


@contextmanager
def moto_server(
    per_connection_mbps: float, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[str, Meter]]:
    """moto's server on a free 127.0.0.1 port in this process, paced; yields URL and meter."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    meter = Meter()
    rate = per_connection_mbps * MB

    class PacedHandler(MotoRequestHandler):
        def setup(self) -> None:
            super().setup()
            meter.connected()
            self.wfile = PacedWriter(self.connection, rate, meter)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=PacedHandler, ssl_context=tls
    )
    thread = threading.Thread(target=server.serve_forever, name="paced-s3", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{'http' if tls is None else 'https'}://{host!s}:{port}", meter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def self_signed_tls(certificate: Path) -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1, its certificate written to `certificate`.

    An ECDSA P-256 certificate made by the openssl command (its key beside it); TLS 1.2 and up.
    """
    key = certificate.with_name("key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context
