"""An S3 endpoint on 127.0.0.1 whose object reads hang, as a stalled connection to S3 does.

HEAD answers normally, so the task starts; every GET then hangs, either before its response
headers or after the first bytes of its body, until the server is stopped. With `trickle`, a
hung body gets one more byte that often: too slow to ever finish, too steady for a client's read
timeout to fire, so only the client itself can end the request. Usage::

    with stalling_s3(Stall.BODY) as url:   # AWS_ENDPOINT_URL=url
        ...
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.fakes.local_http import serving

SIZE = 4 * 1024 * 1024
ETAG = '"stalling"'
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class Stall(enum.Enum):
    HEADERS = "before the response headers"
    BODY = "after the first bytes of the body"


@contextmanager
def stalling_s3(stall: Stall, trickle: float | None = None) -> Iterator[str]:
    """Serve on a free port until the block ends; then every hung request is let go."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # a test's output needs none of it

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(SIZE))
            self.send_header("ETag", ETAG)
            self.end_headers()

        def do_GET(self) -> None:
            if stall is Stall.HEADERS:
                release.wait()
                return
            match = _RANGE.fullmatch(self.headers.get("Range", ""))
            start, end = (int(match[1]), int(match[2])) if match else (0, SIZE - 1)
            self.send_response(206)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Content-Range", f"bytes {start}-{end}/{SIZE}")
            self.send_header("ETag", ETAG)
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            while not release.wait(trickle):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return  # the client has gone

    with serving(Handler, before_stop=release.set) as (host, port):
        yield f"http://{host}:{port}"
