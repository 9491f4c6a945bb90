"""The default processor: size, SHA-256, line count and content type of the object.

Replace it by pointing TASK_PROCESSOR at your own `module:function` with the same signature
(see `task.objects.Processor`); nothing else in the package needs to change.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterator
from typing import Any

from task.objects import ObjectInfo

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


def process(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """Hash and count the object in one pass.

    `lines` counts newlines like `wc -l`, plus one for a last line without a newline.
    """
    digest = hashlib.sha256()
    size = 0
    lines = 0
    head = b""
    last_byte = b""
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        lines += chunk.count(b"\n")
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        if chunk:
            last_byte = chunk[-1:]
    if last_byte and last_byte != b"\n":
        lines += 1  # a last line without a newline is still a line
    return {
        "size": size,
        "sha256": digest.hexdigest(),
        "lines": lines,
        "contentType": detect_content_type(head, obj),
    }


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
