"""Processors the tests plug in through TASK_PROCESSOR, as a user would."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from task.objects import ObjectInfo


def slow(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """Takes long enough per chunk for a test to stop the task in the middle."""
    total = 0
    for chunk in chunks:
        time.sleep(0.2)
        total += len(chunk)
    return {"size": total}


def first_line(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """The README's example: reads only until the first newline."""
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n" in head:
            break
    return {"firstLine": head.split(b"\n", 1)[0].decode("utf-8", "replace")}


def spool_to_tempfile(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """Spools the object to a temporary file, as a processor needing a seekable file would.

    The file is left behind, so a test can see where it landed; the result says who wrote it.
    """
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(prefix="spool-", delete=False) as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        for block in iter(lambda: spool.read(1024 * 1024), b""):
            digest.update(block)
    return {
        "spool": spool.name,
        "tempDir": tempfile.gettempdir(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "sha256": digest.hexdigest(),
    }


def write_outside(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
    """Writes a file under WRITE_OUTSIDE (a directory, `~` allowed), which must fail in the task."""
    for _chunk in chunks:
        pass
    target = Path(os.environ["WRITE_OUTSIDE"]).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    (target / "leaked").write_bytes(b"written outside the scratch volume")
    return {"wrote": str(target)}
