"""One ranged GET over HTTP/1.1, received straight into a caller's buffer without blocking.

The low-level half of the direct download (see `task.download`): it knows HTTP, not S3.
A `RangeRead` sends its request on a connection, then, each time the selector says the
socket is readable, takes everything that has arrived: first the response head, then the
body, with `recv_into` into the part's own slice of a reused buffer, so body bytes are never
copied by Python. Anything unexpected raises `RangeFailed`, and the caller reads that range
another way.

Waking up costs more CPU than receiving, so the socket's low-water mark (SO_RCVLOWAT) holds
the wake-up until a MiB of the body is waiting, or the rest of it. That works the same under
TLS, where the mark counts encrypted bytes in the kernel: each wake-up then decrypts every
whole record that came, one read per 16 KiB record, straight from the TLS object (see
`_record_reader`).
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

HEAD_READ = 64 * 1024  # a response head is a few hundred bytes; the rest is body
MAX_HEAD = 64 * 1024  # a head longer than this is not from S3
# Body bytes waiting in the kernel before the socket reports readable.
LOW_WATER = 1024 * 1024
# The most ciphertext a TLS record holds (2^14 + 2048, RFC 5246) plus its 5-byte header: what
# OpenSSL may have taken from the kernel of the record it has not finished.
TLS_RECORD_MAX = 5 + 2**14 + 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
# OpenSSL's read-ahead buffer under TLS: each read from the kernel takes up to this much, two
# records or so, where OpenSSL alone reads every record in two (its 5-byte header, then the
# rest). Larger is slower: before each record OpenSSL moves what is left of the buffer to its
# front (to align the payload), so 64 KiB cost more than 32 and 256 KiB more than none.
TLS_READ_AHEAD = 32 * 1024
# CPython versions whose SSLContext object starts with OpenSSL's SSL_CTX pointer (every one
# since 3.2; checked again at run time against the context's options).
_SSL_CTX_LAYOUT_KNOWN = {(3, minor) for minor in range(10, 15)}
_SSL_CTRL_SET_READ_AHEAD = 41  # openssl/ssl.h


class RangeFailed(Exception):  # noqa: N818 - a condition the caller handles, not a bug
    """The range could not be read this way: refused, reset, cut off, or an unexpected answer."""


@dataclass(frozen=True)
class Endpoint:
    """Where ranged GETs go: host and port, and TLS settings when the scheme is https."""

    host: str
    port: int
    host_header: str  # as signed in the URL: the port only when it is not the default
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str, tls: ssl.SSLContext | None) -> tuple[Endpoint, str]:
        """The endpoint of an http(s) URL and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise RangeFailed(f"not an http(s) URL: {parts.scheme}://{parts.netloc}")
        if parts.scheme == "https" and tls is None:
            raise RangeFailed("an https URL needs TLS settings")
        endpoint = cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            host_header=parts.netloc,
            tls=tls if parts.scheme == "https" else None,
        )
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return endpoint, target

    def connect(self, timeout: float) -> socket.socket:
        """A new connection (TLS handshake done), in blocking mode with `timeout`."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except OSError as error:  # refused, unreachable, timed out, TLS refused
            raise RangeFailed(f"cannot connect to {self.host_header}: {error}") from error
        return sock


def enable_read_ahead(context: ssl.SSLContext, length: int = TLS_READ_AHEAD) -> bool:
    """Make OpenSSL read TLS records from the kernel `length` bytes at a time; True if done.

    Python's ssl module offers no read-ahead (SSL_CTX_set_read_ahead), so it is set through
    ctypes on the context's own SSL_CTX, found where CPython keeps it: ~0.1 CPU-s less per
    GiB over TLS (half the reads from the kernel). Only on CPython versions known to keep it
    there, only if OpenSSL's functions can be found beside the ssl module, and only if that
    SSL_CTX reports the options Python set on it; anywhere else the context is left as it is.
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _SSL_CTX_LAYOUT_KNOWN:
        return False
    try:
        import _ssl  # noqa: PLC0415 - only where the reads go over TLS
        import ctypes  # noqa: PLC0415

        openssl = ctypes.CDLL(_ssl.__file__)  # OpenSSL's symbols, as the ssl module links them
        get_options = openssl.SSL_CTX_get_options
        control = openssl.SSL_CTX_ctrl
        set_buffer = openssl.SSL_CTX_set_default_read_buffer_len
    except (ImportError, OSError, AttributeError):  # OpenSSL linked statically, or not at all
        return False
    get_options.argtypes, get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
    control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    control.restype = ctypes.c_long
    set_buffer.argtypes, set_buffer.restype = [ctypes.c_void_p, ctypes.c_size_t], None
    ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not ssl_ctx or get_options(ssl_ctx) != context.options:
        return False
    set_buffer(ssl_ctx, length)
    control(ssl_ctx, _SSL_CTRL_SET_READ_AHEAD, 1, None)
    return True


def is_reusable(sock: socket.socket) -> bool:
    """Whether an idle keep-alive connection can take a request: not closed by the server.

    An idle connection has nothing to read; a readable one was closed (or sent junk).
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # already closed here
        return False
    return not readable


def format_request(
    target: str, host_header: str, first: int, last: int, headers: Mapping[str, str]
) -> bytes:
    """A GET request for bytes first..last (inclusive) of `target`."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host_header}",
        f"Range: bytes={first}-{last}",
        "Accept-Encoding: identity",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    except UnicodeEncodeError as error:  # a presigned URL is percent-encoded: never here
        raise RangeFailed(f"cannot send a non-ASCII request line or header: {error}") from error


def request_head(
    sock: socket.socket, target: str, host_header: str, timeout: float
) -> ResponseHead:
    """Send a HEAD request for `target` and read its answer, blocking up to `timeout`.

    keep_alive is False when anything but the head came (a HEAD answer has no body).
    """
    request = f"HEAD {target} HTTP/1.1\r\nHost: {host_header}\r\n\r\n"
    received = bytearray()
    try:
        sock.settimeout(timeout)
        sock.sendall(request.encode("ascii"))
        while (end := received.find(b"\r\n\r\n")) < 0:
            data = sock.recv(HEAD_READ)
            if not data:
                raise RangeFailed("the server closed the connection without answering")
            received += data
            if len(received) > MAX_HEAD:
                raise RangeFailed(f"no end to the response head in {MAX_HEAD} bytes")
    except (OSError, UnicodeEncodeError) as error:
        raise RangeFailed(f"the HEAD request failed: {error}") from error
    head = parse_head(bytes(received[:end]))
    if len(received) > end + 4:
        return ResponseHead(head.status, head.headers, keep_alive=False)
    return head


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: Mapping[str, str]  # names in lower case
    keep_alive: bool


def parse_head(head: bytes) -> ResponseHead:
    """Status, headers and keep-alive of an HTTP/1.x response head (without its blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not status_text.isdigit():
        raise RangeFailed(f"not an HTTP/1.x response: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise RangeFailed(f"malformed response header {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return ResponseHead(int(status_text), headers, keep_alive)


def _record_reader(sock: ssl.SSLSocket) -> Callable[[int, memoryview], int]:
    """Reads one TLS record's plaintext into a buffer: `read(at_most, into) -> count`.

    SSLSocket.recv_into reaches OpenSSL through two Python wrappers (recv_into, then read)
    that check the socket again each time: ~3 us per 16 KiB record here, 0.25 CPU-s per GiB,
    a fifth of what the direct reads cost over TLS. The object under them (`_sslobj`, in
    CPython since 3.5) reads the same record; where it is missing, recv_into does.
    """
    sslobj = getattr(sock, "_sslobj", None)
    read = getattr(sslobj, "read", None)
    if callable(read):
        return cast("Callable[[int, memoryview], int]", read)
    return lambda at_most, into: sock.recv_into(into, at_most)


class RangeRead:
    """One ranged GET in flight on a non-blocking connection, body into `into`.

    Call `on_readable` whenever the selector reports the socket readable; it returns True
    once `into` holds the whole body. `check_head` sees the response head first and may
    raise to reject it (the caller's own checks, such as the ETag).
    """

    def __init__(
        self,
        sock: socket.socket,
        request: bytes,
        into: memoryview,
        check_head: Callable[[ResponseHead], None],
        timeout: float,
    ) -> None:
        self.sock = sock
        self.into = into
        self.received = 0
        self.head: ResponseHead | None = None
        self.answered = False  # any byte of the response came back
        self._head_bytes = bytearray()
        self._check_head = check_head
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._read_record = _record_reader(sock) if isinstance(sock, ssl.SSLSocket) else None
        self._low_water = 1  # as the kernel has it: wake on any byte
        self.patient = True  # waking only for a MiB at a time; False after `hurry`
        try:
            sock.settimeout(timeout)
            sock.sendall(request)  # a few hundred bytes: the socket buffer takes them at once
            sock.setblocking(False)
        except OSError as error:
            raise RangeFailed(f"sending the request failed: {error}") from error

    def on_readable(self) -> bool:
        """Take what has arrived; True when the body is complete."""
        try:
            if self.head is None:
                self._read_head()
            if self.head is not None:
                self._read_body()
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            pass  # nothing (or no whole TLS record) more: wait for the next readiness
        except RangeFailed:
            raise
        except OSError as error:  # reset, TLS errors
            raise RangeFailed(f"the connection failed: {error}") from error
        if self.head is not None:
            self._wait_for_more()
        return self.head is not None and self.received == len(self.into)

    def hurry(self) -> None:
        """Report readable on any byte from now on: for a range that trickles, or went quiet.

        A body slower than the low-water mark would otherwise be heard only in MiB steps, and
        a stall timed from the last MiB rather than the last byte.
        """
        self.patient = False
        self._set_low_water(1)

    def close(self) -> None:
        self.sock.close()

    def _read_head(self) -> None:
        data = self.sock.recv(HEAD_READ)
        if not data:
            raise RangeFailed("the server closed the connection without answering")
        self.answered = True
        self._head_bytes += data
        end = self._head_bytes.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head_bytes) > MAX_HEAD:
                raise RangeFailed(f"no end to the response head in {MAX_HEAD} bytes")
            return
        head = parse_head(bytes(self._head_bytes[:end]))
        if head.status != 206:
            raise RangeFailed(f"HTTP {head.status}")
        if "transfer-encoding" in head.headers:  # S3 sends a length; anything else is a surprise
            raise RangeFailed(f"a {head.headers['transfer-encoding']} body")
        if head.headers.get("content-length") != str(len(self.into)):
            raise RangeFailed(
                f"Content-Length {head.headers.get('content-length')}, asked for {len(self.into)}"
            )
        self._check_head(head)
        body = self._head_bytes[end + 4 :]
        if len(body) > len(self.into):
            raise RangeFailed("more bytes than the response's Content-Length")
        self.into[: len(body)] = body
        self.received = len(body)
        self.head = head
        self._head_bytes = bytearray()

    def _read_body(self) -> None:
        """Everything waiting: one receive on a plain socket, every whole record under TLS.

        Raises BlockingIOError or SSLWantReadError when nothing more is waiting. Decrypted
        bytes could otherwise stay inside the TLS layer, where the selector cannot see them.
        """
        into, total, read_record = self.into, len(self.into), self._read_record
        while self.received < total:
            if read_record is None:
                count = self.sock.recv_into(into[self.received :])
            else:
                try:
                    count = read_record(total - self.received, into[self.received :])
                except ssl.SSLEOFError:  # closed without close_notify: cut off like a plain one
                    count = 0
            if not count:
                raise RangeFailed(
                    f"the connection closed after {self.received} of {total} body bytes"
                )
            self.received += count
            if read_record is None:
                return  # a plain receive took all the kernel had

    def _wait_for_more(self) -> None:
        """Set the low-water mark for the next wake-up: a MiB, or what is left of the body.

        Under TLS what is left may come partly as the rest of a record OpenSSL has begun, so
        the mark is lower by a record: it must never exceed what is still to arrive.
        """
        if not self.patient:
            return
        left = len(self.into) - self.received
        if self._tls:
            left -= TLS_RECORD_MAX
        self._set_low_water(max(1, min(LOW_WATER, left)))

    def _set_low_water(self, count: int) -> None:
        if count != self._low_water:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
            self._low_water = count
