"""What a processor is given and must return: the extension point's types."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar


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


VIEWS_ATTRIBUTE = "takes_views"
_Function = TypeVar("_Function")


def takes_views(processor: _Function) -> _Function:
    """Mark a processor that can take each chunk as a read-only memoryview instead of bytes.

    The frame then hands out slices of the buffers it downloads into, where copying each chunk
    into new bytes would cost ~0.09 CPU-s per GiB. A view holds its bytes only until the
    processor asks for the next chunk: copy (`bytes(view)`) whatever must outlive that. A
    marked processor must take bytes too (boto3's reads still give bytes).
    """
    setattr(processor, VIEWS_ATTRIBUTE, True)
    return processor


def wants_views(processor: object) -> bool:
    """Whether `processor` was marked with `takes_views`."""
    return getattr(processor, VIEWS_ATTRIBUTE, False) is True
