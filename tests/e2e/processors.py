"""A processor the demo tests plug in through TASK_PROCESSOR, as a user trying their code would."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from task.objects import ObjectInfo
from task.processor import process


def fail_when_marked(chunks: Iterator[bytes], obj: ObjectInfo) -> Mapping[str, Any]:
    """The default processor, except that objects named "broken…" fail as buggy code would."""
    if obj.key.rsplit("/", 1)[-1].startswith("broken"):
        raise RuntimeError(f"cannot parse {obj.key}")
    return process(chunks, obj)


def with_settings(chunks: Iterator[bytes], obj: ObjectInfo) -> Mapping[str, Any]:
    """The default processor's result, with what the stack configured for the job."""
    return {
        **process(chunks, obj),
        "greeting": os.environ.get("GREETING"),
        "apiToken": os.environ.get("API_TOKEN"),
    }
