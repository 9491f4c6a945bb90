"""The default processor: size, SHA-256, line count and content type from ordered chunks."""

from __future__ import annotations

import hashlib

import pytest

from task.objects import ObjectInfo, wants_views
from task.processor import (
    NUMPY_FROM_BYTES,
    SNIFF_BYTES,
    Digest,
    NewlineCounter,
    detect_content_type,
    process,
)

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def info(key: str = "data.bin", content_type: str | None = "binary/octet-stream") -> ObjectInfo:
    return ObjectInfo(
        bucket="b", key=key, size=0, etag='"e"', version_id=None, content_type=content_type
    )


def test_sha256_and_size_match_hashlib_however_the_bytes_are_chunked() -> None:
    data = bytes(range(256)) * 1000
    chunks = [data[i : i + 7001] for i in range(0, len(data), 7001)]
    result = process(iter(chunks), info())
    assert result["size"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([], 0),
        ([b"one\ntwo\n"], 2),
        ([b"one\ntw", b"o"], 2),  # the last line has no newline
        ([b"\n", b"\n", b""], 2),
    ],
)
def test_lines_are_counted_across_chunk_boundaries(chunks: list[bytes], lines: int) -> None:
    assert process(iter(chunks), info())["lines"] == lines


def test_an_empty_object_has_the_empty_sha256() -> None:
    result = process(iter([]), info("empty"))
    assert result == {
        "size": 0,
        "sha256": hashlib.sha256(b"").hexdigest(),
        "lines": 0,
        "contentType": "application/octet-stream",
    }


@pytest.mark.parametrize(
    ("head", "key", "declared", "expected"),
    [
        (b"%PDF-1.7 ...", "report.txt", None, "application/pdf"),  # content beats the name
        (b"\x89PNG\r\n\x1a\n....", "x", None, "image/png"),
        (b"a,b\n1,2\n", "x", "text/csv", "text/csv"),  # the uploader's type beats the name
        (b"a,b\n1,2\n", "table.csv", "binary/octet-stream", "text/csv"),
        ("h\u00e9llo".encode(), "notes", None, "text/plain"),
        (b"\x00\x01\x02", "blob", None, "application/octet-stream"),
        # A zip signature names the container; the declared type or the name says which one.
        (b"PK\x03\x04....", "report.docx", None, DOCX),
        (b"PK\x03\x04....", "upload", DOCX, DOCX),
        (b"PK\x03\x04....", "archive", None, "application/zip"),
        (b"PK\x03\x04....", "notes.txt", None, "application/zip"),
        # Signatures that are also words count only when the bytes are not text.
        (b"BZh is also a word\n", "notes", None, "text/plain"),
        (b"BZh91AY&SY\x00\x01", "x", None, "application/x-bzip2"),
        (b"PAR1,2,3\n", "table.csv", "text/csv", "text/csv"),
        (b"PAR1\x15\x04\x15\x00\x8c", "x", None, "application/vnd.apache.parquet"),
        (b"a,b\n", "data:report.csv", None, "text/csv"),  # not a data: URL
    ],
)
def test_content_type_is_sniffed_then_declared_then_guessed_from_the_key(
    head: bytes, key: str, declared: str | None, expected: str
) -> None:
    assert detect_content_type(head, info(key, declared)) == expected


def test_text_cut_inside_a_multibyte_character_is_still_text() -> None:
    head = ("\u00e9" * 10).encode()[:-1]
    assert detect_content_type(head, info("notes", None)) == "text/plain"


@pytest.mark.parametrize(
    "chunk",
    [b"", b"\n", b"no newline", b"a\nb\n\nc", bytes(range(256)) * 4099],
    ids=["empty", "one", "none", "several", "every-byte"],
)
def test_numpy_counts_newlines_exactly_as_bytes_count_does(chunk: bytes) -> None:
    counter = NewlineCounter()
    assert counter(chunk) == chunk.count(b"\n")
    assert counter(chunk[:7]) == chunk[:7].count(b"\n")  # a shorter chunk after a longer one


@pytest.mark.parametrize("size", [0, NUMPY_FROM_BYTES], ids=["bytes.count", "numpy"])
def test_memoryviews_whose_bytes_change_after_each_chunk_give_the_same_result(size: int) -> None:
    # As the frame hands them to a processor marked takes_views: one buffer, reused.
    data = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"last line\n"
    buffer = bytearray(4000)
    digest = Digest(expected_size=size)
    for start in range(0, len(data), len(buffer)):
        piece = data[start : start + len(buffer)]
        buffer[: len(piece)] = piece
        digest.update(memoryview(buffer)[: len(piece)].toreadonly())
    buffer[:] = bytes(len(buffer))  # what a view showed is gone: nothing of it may be kept
    expected = Digest()
    expected.update(data)
    assert digest.summary() == expected.summary()
    assert digest.head == data[:SNIFF_BYTES]
    assert wants_views(process)


def test_a_large_object_is_counted_the_same_with_numpy() -> None:
    chunks = [b"one\ntw", b"o\n\nthree", b"", b"\nfour"]
    digest = Digest(expected_size=NUMPY_FROM_BYTES)
    for chunk in chunks:
        digest.update(chunk)
    assert isinstance(digest._count_newlines, NewlineCounter)
    assert digest.summary()["lines"] == 5 == process(iter(chunks), info())["lines"]
