"""The default processor: size, SHA-256, line count and content type of the object.

Replace it by pointing TASK_PROCESSOR at your own `module:function` with the same signature
(see `task.objects.Processor`); nothing else in the package needs to change.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from task.objects import ObjectInfo, takes_views

if TYPE_CHECKING:
    import numpy as np

NEWLINE = ord("\n")
# Counting newlines with numpy is ~4x `bytes.count` (9 against 2 GB/s here), but importing it
# costs ~0.13 CPU-s: from this size on, the saving repays it.
NUMPY_FROM_BYTES = 256 * 1024 * 1024
SNIFF_BYTES = 4096  # enough for every signature below and a fair text/binary guess
GENERIC_TYPES = {"", "binary/octet-stream", "application/octet-stream"}
# Signatures that identify a format from its first bytes, whatever the key's extension says.
_MAGIC: tuple[tuple[re.Pattern[bytes], str], ...] = tuple(
    (re.compile(pattern), content_type)
    for pattern, content_type in (
        (re.escape(b"%PDF-"), "application/pdf"),
        (re.escape(b"\x89PNG\r\n\x1a\n"), "image/png"),
        (re.escape(b"\xff\xd8\xff"), "image/jpeg"),
        (re.escape(b"GIF87a"), "image/gif"),
        (re.escape(b"GIF89a"), "image/gif"),
        (re.escape(b"PK\x03\x04"), "application/zip"),
        (re.escape(b"\x1f\x8b"), "application/gzip"),
        # "BZh" alone starts English text too: the block size digit and a block (or
        # end-of-stream) marker make it bzip2.
        (rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)", "application/x-bzip2"),
        (re.escape(b"\xfd7zXZ\x00"), "application/x-xz"),
        (re.escape(b"(\xb5/\xfd"), "application/zstd"),
        (re.escape(b"PAR1"), "application/vnd.apache.parquet"),
    )
)
# Formats that are zip archives inside (docx, xlsx, jar, epub, ...): the declared type or the
# extension says which one, so they win over the bare signature.
_CONTAINERS = {"application/zip"}
# Short signatures that are also plain words: they count only in a head that is not text.
_WEAK = {"application/vnd.apache.parquet"}


class Digest:
    """Size, SHA-256, line count and first bytes of a stream, fed one chunk at a time."""

    def __init__(self, expected_size: int = 0) -> None:
        self._sha256 = hashlib.sha256()
        self._count_newlines: Callable[[bytes | memoryview], int] = (
            NewlineCounter() if expected_size >= NUMPY_FROM_BYTES else _count_newlines
        )
        self.size = 0
        self.lines = 0
        self.head = b""
        self._last_byte = b""

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        self.size += len(chunk)
        self.lines += self._count_newlines(chunk)
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
        if chunk:
            self._last_byte = bytes(chunk[-1:])  # a view's bytes change after this chunk

    def summary(self) -> dict[str, Any]:
        """`lines` counts newlines like `wc -l`, plus one for a last line without a newline."""
        unterminated = bool(self._last_byte) and self._last_byte != b"\n"
        return {
            "size": self.size,
            "sha256": self._sha256.hexdigest(),
            "lines": self.lines + unterminated,
        }


class NewlineCounter:
    """Counts newlines in a chunk with numpy, comparing into one reused buffer."""

    def __init__(self) -> None:
        # numpy's OpenBLAS starts a thread per CPU that spins after the import: ~0.12 CPU-s
        # taken from the task's quota for matrix maths this processor never does.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        import numpy  # noqa: PLC0415 - imported only where it pays for itself, see above

        self._numpy = numpy
        self._matches: np.ndarray[Any, np.dtype[np.bool_]] = numpy.empty(0, dtype=numpy.bool_)

    def __call__(self, chunk: bytes | memoryview) -> int:
        numpy = self._numpy
        if len(chunk) > len(self._matches):
            self._matches = numpy.empty(len(chunk), dtype=numpy.bool_)
        matches = self._matches[: len(chunk)]
        numpy.equal(numpy.frombuffer(chunk, dtype=numpy.uint8), NEWLINE, out=matches)
        return int(numpy.count_nonzero(matches))


def _count_newlines(chunk: bytes | memoryview) -> int:
    return (chunk if isinstance(chunk, bytes) else chunk.tobytes()).count(b"\n")


@takes_views
def process(chunks: Iterator[bytes | memoryview], obj: ObjectInfo) -> dict[str, Any]:
    """Hash and count the object in one pass (see `Digest`), and name its content type.

    It takes memoryviews (`takes_views`): hashing and counting need no copy of the chunks.
    """
    digest = Digest(expected_size=obj.size)
    for chunk in chunks:
        digest.update(chunk)
    return {**digest.summary(), "contentType": detect_content_type(digest.head, obj)}


def detect_content_type(head: bytes, obj: ObjectInfo) -> str:
    """The content's own signature, else the uploader's Content-Type, else the key's extension,
    else text/plain for UTF-8 text, else application/octet-stream.

    Two exceptions keep a signature from hiding a better answer: a zip archive takes the
    declared or named type when there is one (a .docx is a zip), and a signature that is also
    a plain word ("PAR1") does not count in a head that reads as text.
    """
    named = _declared_type(obj) or _type_from_key(obj.key)
    sniffed = _sniff(head)
    if sniffed in _CONTAINERS and named and not named.startswith("text/"):
        return named
    if sniffed:
        return sniffed
    if named:
        return named
    if head and _looks_like_text(head):
        return "text/plain"
    return "application/octet-stream"


def _sniff(head: bytes) -> str | None:
    for signature, content_type in _MAGIC:
        if signature.match(head):
            if content_type in _WEAK and _looks_like_text(head):
                return None
            return content_type
    return None


def _declared_type(obj: ObjectInfo) -> str | None:
    declared = (obj.content_type or "").split(";")[0].strip().lower()
    return None if declared in GENERIC_TYPES else declared


def _type_from_key(key: str) -> str | None:
    # A leading "/" keeps a key such as "data:report.csv" from being read as a data: URL.
    guessed, _encoding = mimetypes.guess_type("/" + key, strict=False)
    return guessed


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The sniffed prefix may cut a multi-byte character in two: only its tail may fail.
        return error.start >= len(head) - 3 and error.reason == "unexpected end of data"
    return True
