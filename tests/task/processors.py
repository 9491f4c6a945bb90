"""Processors the tests plug in through TASK_PROCESSOR, as a user would."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
