"""An S3 endpoint on 127.0.0.1 serving one object's ranges, with faults to inject per range.

Enough of S3 for the task's download: HEAD (a fault can be armed for the next one too), and
GET with a Range (206 with Content-Range,
ETag and x-amz-version-id), over HTTP/1.1 keep-alive unless told to close every connection,
optionally over TLS. Every request is recorded, and a fault can be armed for the next GET of
a range (by its first byte): cut the body short, answer an error status, stall, trickle, or
answer with another ETag. Usage::

    server = RangedS3(data)
    with server.running() as url:     # AWS_ENDPOINT_URL=url
        server.fail_next(0, Fault.CUT)
        ...
    server.requests                   # [Request(method, path, query, headers, connection)]
"""

from __future__ import annotations

import enum
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.local_http import serving

ETAG = '"ranged-etag"'
VERSION_ID = "v1"
TRICKLE_PIECES = 16
TRICKLE_PAUSE_SECONDS = 0.05
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class Fault(enum.Enum):
    CUT = "send half the body, then close the connection"
    UNAVAILABLE = "answer 503 SlowDown"
    STALL = "send the headers and nothing more until the server stops"
    OTHER_ETAG = "answer with another version's ETag"
    CLOSE_WHEN_IDLE = "close the connection once the response is sent"
    TRICKLE = "send the body in 16 pieces, each 50 ms after the last"
    EXPIRED = "answer 403 AccessDenied: the presigned URL has expired"
    RESET = "send half the body, then reset the connection (TCP RST)"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    connection: int  # which connection carried it (1, 2, ...)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class RangedS3:
    data: bytes
    keep_alive: bool = True
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    _faults: dict[int, Fault] = field(default_factory=dict)
    _head_faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: int = 0
    _release: threading.Event = field(default_factory=threading.Event)

    def fail_next(self, first_byte: int, fault: Fault) -> None:
        """The next GET of the range starting at `first_byte` meets `fault` (once)."""
        with self._lock:
            self._faults[first_byte] = fault

    def fail_next_head(self, fault: Fault) -> None:
        """The next HEAD meets `fault` (UNAVAILABLE only: a HEAD has no body to cut)."""
        with self._lock:
            self._head_faults.append(fault)

    def heads(self) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.method == "HEAD"]

    def gets(self) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.method == "GET"]

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free port until the block ends; stalled requests are then let go."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # a test's output needs none of it

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections += 1
                    self.connection_number = fake._connections

            def _record(self) -> Request:
                parts = urlsplit(self.path)
                request = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {name.lower(): value for name, value in self.headers.items()},
                    self.connection_number,
                )
                with fake._lock:
                    fake.requests.append(request)
                return request

            def _common_headers(self, etag: str = ETAG) -> None:
                self.send_header("ETag", etag)
                self.send_header("x-amz-version-id", VERSION_ID)
                self.send_header("Last-Modified", "Sun, 29 Nov 2026 00:00:00 GMT")
                if not fake.keep_alive:
                    self.send_header("Connection", "close")

            def do_HEAD(self) -> None:
                self._record()
                with fake._lock:
                    fault = fake._head_faults.pop(0) if fake._head_faults else None
                if fault is Fault.UNAVAILABLE:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(fake.data)))
                self._common_headers()
                self.end_headers()

            def do_GET(self) -> None:
                request = self._record()
                match = _RANGE.fullmatch(request.range or "")
                start, end = (int(match[1]), int(match[2])) if match else (0, len(fake.data) - 1)
                end = min(end, len(fake.data) - 1)
                with fake._lock:
                    fault = fake._faults.pop(start, None)
                if fault is Fault.EXPIRED:
                    body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
                    body += b"</Error>"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Content-Type", "application/xml")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if fault is Fault.UNAVAILABLE:
                    body = b"<Error><Code>SlowDown</Code><Message>Slow down</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Content-Type", "application/xml")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(206)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(fake.data)}")
                self._common_headers('"another-etag"' if fault is Fault.OTHER_ETAG else ETAG)
                self.end_headers()
                content = memoryview(fake.data)[start : end + 1]  # no copy: tests may count memory
                if fault is Fault.STALL:
                    self.wfile.flush()
                    fake._release.wait()
                    self.close_connection = True
                    return
                if fault is Fault.TRICKLE:
                    piece = -(-len(content) // TRICKLE_PIECES)
                    for offset in range(0, len(content), piece):
                        self.wfile.write(content[offset : offset + piece])
                        self.wfile.flush()
                        time.sleep(TRICKLE_PAUSE_SECONDS)
                    return
                if fault is Fault.CUT:
                    self.wfile.write(content[: len(content) // 2])
                    self.close_connection = True
                    return
                if fault is Fault.RESET:
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    # Linger 0: close() sends RST, as a reset by a load balancer does.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                self.wfile.write(content)
                if fault is Fault.CLOSE_WHEN_IDLE:
                    self.close_connection = True

        tls = self.tls
        wrap = None if tls is None else partial(tls.wrap_socket, server_side=True)
        with serving(Handler, wrap=wrap, before_stop=self._release.set) as (host, port):
            yield f"{'http' if tls is None else 'https'}://{host}:{port}"
