"""Serve a fake's request handler on a free port of 127.0.0.1 for the length of a block."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler],
    *,
    wrap: Callable[[socket.socket], socket.socket] | None = None,
    before_stop: Callable[[], None] | None = None,
) -> Iterator[tuple[str, int]]:
    """(host, port) while the block runs. `wrap` (TLS) takes the listening socket;
    `before_stop` frees handlers a fake holds back, so that none outlives the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if wrap is not None:
        server.socket = wrap(server.socket)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield str(host), int(port)
    finally:
        if before_stop is not None:
            before_stop()
        server.shutdown()
        server.server_close()
        thread.join(5)
