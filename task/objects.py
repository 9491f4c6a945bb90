"""What a processor is given and must return: the extension point's types."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """The object being processed, as S3 described it when the task started."""

    bucket: str
    key: str
    size: int
    etag: str
    # The version every byte is read from; None when the bucket is not versioned (then the
    # reads are pinned to `etag` instead).
    version_id: str | None
    content_type: str | None = None
    last_modified: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class Processor(Protocol):
    """A function that turns the object's bytes into a JSON-serialisable result.

    `chunks` yields the object's bytes in order (each chunk at most 1 MiB, all of them
    together exactly `obj.size` bytes); it is a one-pass iterator, so the object is never in
    memory whole. Return a mapping that `json.dumps` accepts; the frame adds `bucket`, `key`,
    `versionId`, `startedAt`, `finishedAt`, `seconds` and `bytesPerSecond` (those names are
    reserved) and writes it to `<RESULT_PREFIX><key>.json`. Raise to fail the task: no result
    is written and the exit code is PROCESSING_FAILED. A processor may stop iterating early;
    the rest of the object is then not downloaded.
    """

    def __call__(self, chunks: Iterator[bytes], obj: ObjectInfo, /) -> Mapping[str, Any]: ...
