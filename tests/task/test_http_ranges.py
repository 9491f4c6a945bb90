"""One ranged GET over a non-blocking connection: head parsed, body straight into a buffer."""

from __future__ import annotations

import contextlib
import fcntl
import selectors
import socket
import ssl
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from task import http_ranges
from task.http_ranges import (
    LOW_WATER,
    TLS_READ_AHEAD,
    Endpoint,
    RangeFailed,
    RangeRead,
    ResponseHead,
    _record_reader,
    enable_read_ahead,
    format_request,
    is_reusable,
    parse_head,
)
from tests.fakes.certificates import server_context

HEAD = (
    b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/20\r\n"
    b'ETag: "e"\r\n\r\n'
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected client and server over TCP on 127.0.0.1 (low-water marks are TCP's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def wakes(sock: socket.socket, timeout: float = 0.2) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def head_for(length: int) -> bytes:
    return HEAD.replace(b"Length: 10", f"Length: {length}".encode())


def accept(head: ResponseHead) -> None:
    """A caller's check that finds nothing wrong."""


def read_all(read: RangeRead, server: socket.socket, pieces: list[bytes]) -> bool:
    """Feed the response in pieces, calling on_readable as a selector would."""
    complete = False
    with selectors.DefaultSelector() as selector:
        selector.register(read.sock, selectors.EVENT_READ)
        for piece in pieces:
            if piece:
                server.sendall(piece)
            else:
                server.shutdown(socket.SHUT_WR)
            while selector.select(0.2):
                complete = read.on_readable()
                if complete:
                    return True
    return complete


def test_a_request_asks_for_an_inclusive_range_with_the_callers_headers() -> None:
    request = format_request("/b/k?X-Amz-Signature=s", "host:9000", 0, 99, {"If-Match": '"e"'})
    assert request.startswith(b"GET /b/k?X-Amz-Signature=s HTTP/1.1\r\nHost: host:9000\r\n")
    assert b"\r\nRange: bytes=0-99\r\n" in request
    assert request.endswith(b'\r\nIf-Match: "e"\r\n\r\n')


def test_a_head_gives_status_lower_case_headers_and_whether_the_connection_stays() -> None:
    head = parse_head(HEAD[:-4])
    assert head.status == 206
    assert head.headers["content-range"] == "bytes 0-9/20"
    assert head.keep_alive
    assert not parse_head(b"HTTP/1.1 206 OK\r\nConnection: close").keep_alive
    assert not parse_head(b"HTTP/1.0 206 OK").keep_alive
    with pytest.raises(RangeFailed, match="not an HTTP"):
        parse_head(b"SSH-2.0-OpenSSH")


def test_the_body_lands_in_the_buffer_however_the_response_is_split(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    buffer = bytearray(10)
    seen: list[ResponseHead] = []
    read = RangeRead(client, b"GET / HTTP/1.1\r\n\r\n", memoryview(buffer), seen.append, 5)
    response = HEAD + b"0123456789"
    assert read_all(read, server, [response[:7], response[7:70], response[70:]])
    assert bytes(buffer) == b"0123456789"
    assert [head.headers["etag"] for head in seen] == ['"e"']
    assert server.recv(100) == b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
        (HEAD.replace(b"Length: 10", b"Length: 20"), "Content-Length 20"),
        (HEAD.replace(b"206", b"200"), "HTTP 200"),
        (HEAD + b"01234", "closed after 5 of 10"),
        (b"", "without answering"),
    ],
    ids=["error-status", "wrong-length", "whole-object", "cut-off", "closed"],
)
def test_anything_but_the_whole_range_asked_for_fails_the_read(
    pair: tuple[socket.socket, socket.socket], response: bytes, reason: str
) -> None:
    client, server = pair
    read = RangeRead(client, b"GET / HTTP/1.1\r\n\r\n", memoryview(bytearray(10)), accept, 5)
    with pytest.raises(RangeFailed, match=reason):
        read_all(read, server, [response, b""])


def test_the_callers_check_can_reject_a_head(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair

    def reject(head: ResponseHead) -> None:
        raise RangeFailed(f"not ours: {head.headers['etag']}")

    read = RangeRead(client, b"GET / HTTP/1.1\r\n\r\n", memoryview(bytearray(10)), reject, 5)
    with pytest.raises(RangeFailed, match='not ours: "e"'):
        read_all(read, server, [HEAD])


def test_an_idle_connection_closed_by_the_server_is_not_reused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    assert is_reusable(client)
    server.close()
    assert not is_reusable(client)


def test_a_body_wakes_the_reader_once_a_mib_has_come_or_all_that_is_left(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    body = bytes(range(256)) * (6 * 1024 + 4)  # 1.5 MiB and a bit
    buffer = bytearray(len(body))
    read = RangeRead(client, b"GET / HTTP/1.1\r\n\r\n", memoryview(buffer), accept, 5)
    server.sendall(head_for(len(body)) + body[:1000])
    assert wakes(client)
    assert not read.on_readable()
    sent = 1000
    server.sendall(body[sent : sent + LOW_WATER // 2])
    sent += LOW_WATER // 2
    assert not wakes(client)  # half a MiB: not worth waking for
    server.sendall(body[sent : sent + LOW_WATER // 2])
    sent += LOW_WATER // 2
    assert wakes(client)
    assert not read.on_readable()
    server.sendall(body[sent:-1])
    assert not wakes(client)  # the rest is less than a MiB: all of it, then
    server.sendall(body[-1:])
    assert wakes(client)
    assert read.on_readable()
    assert buffer == body


def test_a_hurried_read_wakes_for_every_byte(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    buffer = bytearray(3 * LOW_WATER)
    read = RangeRead(client, b"GET / HTTP/1.1\r\n\r\n", memoryview(buffer), accept, 5)
    server.sendall(head_for(len(buffer)))
    assert wakes(client)
    read.on_readable()
    read.hurry()
    server.sendall(b"x")
    assert wakes(client)
    read.on_readable()
    assert read.received == 1
    server.sendall(b"y")
    assert wakes(client)  # and stays hurried


class BioServer:
    """The server end of a TLS connection whose records can be sent split anywhere."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=True)

    def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sock.sendall(self._out.read())
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionAbortedError("the client left during the handshake") from None
                self._in.write(data)
                continue
            self.sock.sendall(self._out.read())  # Finished, and TLS 1.3's session tickets
            return

    def encrypt(self, data: bytes) -> bytes:
        self._tls.write(data)
        return self._out.read()


def connect_tls(
    tcp_pair: tuple[socket.socket, socket.socket], folder: Path, read_ahead: bool = False
) -> tuple[ssl.SSLSocket, BioServer]:
    """A client TLS socket that trusts the server, handshake done, and the server end."""
    client, server = tcp_pair
    context, certificate = server_context(folder)
    bio_server = BioServer(server, context)
    handshake = threading.Thread(target=bio_server.handshake)
    handshake.start()
    client_context = ssl.create_default_context(cafile=str(certificate))
    if read_ahead:
        assert enable_read_ahead(client_context)
    tls = client_context.wrap_socket(client, server_hostname="127.0.0.1")
    handshake.join()
    return tls, bio_server


@pytest.fixture
def tls_pair(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> tuple[ssl.SSLSocket, BioServer]:
    return connect_tls(tcp_pair, tmp_path)


def waiting_in_kernel(sock: socket.socket) -> int:
    """Bytes received by the kernel that nobody has read yet."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), sys.byteorder)


@pytest.mark.parametrize("read_ahead", [False, True], ids=["alone", "read-ahead"])
def test_with_read_ahead_openssl_takes_records_from_the_kernel_32_kib_at_a_time(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path, read_ahead: bool
) -> None:
    tls, server = connect_tls(tcp_pair, tmp_path, read_ahead)
    server.sock.sendall(server.encrypt(b"hello"))
    assert tls.recv(100) == b"hello"  # TLS 1.3's session tickets are read with it
    ciphertext = server.encrypt(bytes(4 * 16384))  # four full records
    server.sock.sendall(ciphertext)
    deadline = time.monotonic() + 5
    while waiting_in_kernel(tls) < len(ciphertext) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(tls.recv(16384)) == 16384  # one record's plaintext
    taken = len(ciphertext) - waiting_in_kernel(tls)
    record = len(ciphertext) // 4
    if read_ahead:  # all it could hold but the few bytes that align a record's payload
        assert TLS_READ_AHEAD - 8 < taken <= TLS_READ_AHEAD
    else:
        assert taken == record
    assert b"".join(tls.recv(16384) for _ in range(3)) == bytes(3 * 16384)


def test_read_ahead_is_left_alone_on_a_python_not_known_to_keep_openssls_context_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_ranges, "_SSL_CTX_LAYOUT_KNOWN", set())
    assert not enable_read_ahead(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


def test_under_tls_the_last_part_of_a_body_wakes_the_reader_even_mid_record(
    tls_pair: tuple[ssl.SSLSocket, BioServer],
) -> None:
    # OpenSSL holds the start of a record until the rest comes: a mark of "all that is
    # left" would then wait for bytes that never come.
    tls, server = tls_pair
    body = bytes(range(256)) * (5 * 1024 + 3)  # 1.25 MiB and a bit: 81 records
    ciphertext = server.encrypt(head_for(len(body)) + body)
    buffer = bytearray(len(body))
    read = RangeRead(tls, b"GET / HTTP/1.1\r\n\r\n", memoryview(buffer), accept, 5)
    for start, end in ((0, 4000), (4000, LOW_WATER + 77_777), (LOW_WATER + 77_777, -10)):
        server.sock.sendall(ciphertext[start:end])
        assert wakes(tls, timeout=2), f"no wake-up after byte {end} of {len(ciphertext)}"
        assert not read.on_readable()
    server.sock.sendall(ciphertext[-10:])
    assert wakes(tls, timeout=2)
    assert read.on_readable()
    assert buffer == body


def test_under_tls_a_body_cut_off_says_how_much_came(
    tls_pair: tuple[ssl.SSLSocket, BioServer],
) -> None:
    tls, server = tls_pair
    read = RangeRead(tls, b"GET / HTTP/1.1\r\n\r\n", memoryview(bytearray(10)), accept, 5)
    cut_off = [server.encrypt(HEAD + b"01234"), b""]  # closed with no TLS close_notify
    with pytest.raises(RangeFailed, match="closed after 5 of 10 body bytes"):
        read_all(read, server.sock, cut_off)


def test_under_tls_records_are_read_without_sslsockets_python_wrappers(
    tls_pair: tuple[ssl.SSLSocket, BioServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each wrapper call costs ~3 us per 16 KiB record: 0.25 CPU-s per GiB.
    tls, server = tls_pair
    body = bytes(range(256)) * 1024  # 16 records
    buffer = bytearray(len(body))
    read = RangeRead(tls, b"GET / HTTP/1.1\r\n\r\n", memoryview(buffer), accept, 5)

    def refused(*_args: object) -> int:
        raise AssertionError("a record was read through SSLSocket.recv_into")

    monkeypatch.setattr(ssl.SSLSocket, "recv_into", refused)
    assert read_all(read, server.sock, [server.encrypt(head_for(len(body)) + body)])
    assert buffer == body


def test_a_tls_socket_without_its_tls_object_is_read_through_recv_into() -> None:
    class Bare:
        def recv_into(self, into: memoryview, at_most: int) -> int:
            into[:at_most] = b"x" * at_most
            return at_most

    into = memoryview(bytearray(8))
    assert _record_reader(Bare())(3, into) == 3  # type: ignore[arg-type]
    assert bytes(into) == b"xxx\0\0\0\0\0"


def test_a_server_whose_certificate_is_not_trusted_is_refused(tmp_path: Path) -> None:
    context, _certificate = server_context(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            server, _ = listener.accept()
            with server, contextlib.suppress(OSError):
                BioServer(server, context).handshake()

        thread = threading.Thread(target=serve)
        thread.start()
        port = listener.getsockname()[1]
        endpoint = Endpoint("127.0.0.1", port, f"127.0.0.1:{port}", ssl.create_default_context())
        with pytest.raises(RangeFailed, match="certificate verify failed"):
            endpoint.connect(timeout=5)
        thread.join()
