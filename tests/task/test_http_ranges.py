"""One ranged GET over a non-blocking connection: head parsed, body straight into a buffer."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from task.http_ranges import (
    RangeFailed,
    RangeRead,
    ResponseHead,
    format_request,
    is_reusable,
    parse_head,
)

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
