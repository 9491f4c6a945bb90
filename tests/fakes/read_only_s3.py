"""An S3 endpoint on 127.0.0.1 that serves one object and refuses every write.

S3 answers so when a task role may read uploads but not write results: every GET and HEAD
returns the object, every PUT 403 AccessDenied. Usage::

    with read_only_s3(b"the object's bytes") as url:   # AWS_ENDPOINT_URL=url
        ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.fakes.local_http import serving

ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


@contextmanager
def read_only_s3(body: bytes) -> Iterator[str]:
    """Serve on a free port until the block ends."""
    etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # a test's output needs none of it

        def _object_headers(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "text/plain")
            self.send_header("ETag", etag)
            self.end_headers()

        def do_HEAD(self) -> None:
            self._object_headers()

        def do_GET(self) -> None:
            self._object_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            self._read_request_body()  # answering before it is read could reset the connection
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(ACCESS_DENIED)))
            self.end_headers()
            self.wfile.write(ACCESS_DENIED)

        def _read_request_body(self) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return
            while size := int(self.rfile.readline().split(b";")[0], 16):
                self.rfile.read(size + 2)  # the chunk and its CRLF
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers (a checksum), up to the blank line

    with serving(Handler) as (host, port):
        yield f"http://{host}:{port}"
