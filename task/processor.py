"""The default processor: size, SHA-256, line count and content type of the object.

Replace it by pointing TASK_PROCESSOR at your own `module:function` with the same signature
(see `task.objects.Processor`); nothing else in the package needs to change.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterator
from typing import Any

from task.objects import ObjectInfo

SNIFF_BYTES = 4096  # enough for every signature below and a fair text/binary guess
GENERIC_TYPES = {"", "binary/octet-stream", "application/octet-stream"}
# Signatures that identify a format from its first bytes, whatever the key's extension says.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"(\xb5/\xfd", "application/zstd"),
    (b"PAR1", "application/vnd.apache.parquet"),
)


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
    else text/plain for UTF-8 text, else application/octet-stream."""
    for signature, content_type in _MAGIC:
        if head.startswith(signature):
            return content_type
    declared = (obj.content_type or "").split(";")[0].strip().lower()
    if declared not in GENERIC_TYPES:
        return declared
    guessed, _encoding = mimetypes.guess_type(obj.key, strict=False)
    if guessed:
        return guessed
    if head and _looks_like_text(head):
        return "text/plain"
    return "application/octet-stream"


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # The sniffed prefix may cut a multi-byte character in two: only its tail may fail.
        return error.start >= len(head) - 3 and error.reason == "unexpected end of data"
    return True
