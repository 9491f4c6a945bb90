"""S3 event notifications turned into typed upload records, and each upload's job id.

Pure functions: no AWS calls, no settings. A malformed event or record raises ValueError with a
message saying which record and what is wrong, never a KeyError from deep inside.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

S3_EVENT_SOURCE = "aws:s3"
SQS_EVENT_SOURCE = "aws:sqs"  # a batch from the backlog queue, through the event source mapping
UPLOAD_EVENT_PREFIX = "ObjectCreated:"
TEST_EVENT = "s3:TestEvent"
# A versionId of "null" names the one unversioned object of a bucket whose versioning was
# suspended: it is not unique per upload, so the job id falls back to the sequencer.
UNVERSIONED = "null"
# Added to an event by `python -m jobctl redrive`: the failure it replays (the runner's report
# names it), so that a failed job waits again once, however often the same message is replayed.
REDRIVE_FIELD = "redriveOf"


class MalformedEventError(ValueError):
    """The event or a record is not what S3 sends; the message says which and what."""


@dataclass(frozen=True)
class Upload:
    """One S3 event record, key decoded. `event_name` is e.g. "ObjectCreated:Put"."""

    bucket: str
    key: str
    event_name: str
    version_id: str | None = None
    sequencer: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: str | None = None
    redrive_of: str | None = None

    @property
    def is_upload(self) -> bool:
        """Put, Post, Copy and CompleteMultipartUpload all count; removals and the rest do not."""
        return self.event_name.startswith(UPLOAD_EVENT_PREFIX)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class BacklogMessage:
    """One backlog message as the event source mapping hands it over; `body` is an S3 event."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int  # this receive included: 1 the first time
    sent_at: float  # when the upload was parked, seconds since the epoch


def is_backlog_event(event: object) -> bool:
    """An event source mapping's SQS batch (records from "aws:sqs"), not an S3 notification."""
    if not isinstance(event, Mapping):
        return False
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and isinstance(records[0], Mapping)
        and records[0].get("eventSource") == SQS_EVENT_SOURCE
    )


def backlog_messages(event: object) -> list[BacklogMessage]:
    """The batch's messages; MalformedEventError if a record is not what Lambda sends.

    A record without its message id cannot be named in a partial batch response, so such an
    event fails as a whole (the batch comes back after the visibility timeout).
    """
    messages = []
    for index, record in enumerate(event_records(event)):
        where = f"record {index}"
        if not isinstance(record, Mapping) or record.get("eventSource") != SQS_EVENT_SOURCE:
            raise MalformedEventError(f"malformed {where}: not an SQS record from the backlog")
        attributes = record.get("attributes")
        if not isinstance(attributes, Mapping):
            attributes = {}
        messages.append(
            BacklogMessage(
                message_id=_text(record, "messageId", where),
                receipt_handle=_text(record, "receiptHandle", where),
                body=str(record.get("body", "")),
                receive_count=_whole(attributes.get("ApproximateReceiveCount"), 1),
                sent_at=_whole(attributes.get("SentTimestamp"), 0) / 1000,
            )
        )
    return messages


def _whole(value: object, default: int) -> int:
    """SQS sends its counters and timestamps as strings of digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return default


def is_test_event(event: object) -> bool:
    """The message S3 sends once when a notification is configured; it names no object."""
    return isinstance(event, Mapping) and event.get("Event") == TEST_EVENT


def event_records(event: object) -> Sequence[object]:
    """The event's raw records; ValueError if the event is not an S3 notification at all."""
    if not isinstance(event, Mapping):
        raise MalformedEventError(
            f"malformed event: expected an S3 notification (a JSON object with 'Records'), "
            f"got {type(event).__name__}"
        )
    records = event.get("Records")
    if records is None:
        raise MalformedEventError(
            f"malformed event: no 'Records' (top-level fields: {sorted(map(str, event))[:10]})"
        )
    if not isinstance(records, list) or not records:
        raise MalformedEventError("malformed event: 'Records' must be a non-empty list")
    return records


def decode_key(encoded: str) -> str:
    """The object key exactly as stored: S3 sends it form-encoded ('+' is a space, %XX UTF-8)."""
    try:
        return unquote_plus(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise MalformedEventError(
            f"object key {encoded!r} is not valid percent-encoded UTF-8"
        ) from error


def parse_record(record: object, index: int = 0) -> Upload:
    """One raw record as an Upload (any S3 event name); ValueError names the record and field."""
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise MalformedEventError(
            f"malformed {where}: expected an object, got {type(record).__name__}"
        )
    source = record.get("eventSource")
    if source != S3_EVENT_SOURCE:
        raise MalformedEventError(
            f"malformed {where}: not an S3 record (eventSource {source!r}, expected "
            f"{S3_EVENT_SOURCE!r})"
        )
    event_name = _text(record, "eventName", where)
    s3 = _mapping(record, "s3", where)
    bucket = _mapping(s3, "bucket", where, "s3.")
    s3_object = _mapping(s3, "object", where, "s3.")
    size = s3_object.get("size")
    # bool is an int subclass; a size of true is as malformed as a size of "12".
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise MalformedEventError(
            f"malformed {where}: s3.object.size must be a non-negative integer"
        )
    try:
        key = decode_key(_text(s3_object, "key", where, "s3.object."))
    except MalformedEventError as error:
        raise MalformedEventError(f"malformed {where}: {error}") from error
    return Upload(
        bucket=_text(bucket, "name", where, "s3.bucket."),
        key=key,
        event_name=event_name,
        version_id=_optional_text(s3_object, "versionId", where),
        sequencer=_optional_text(s3_object, "sequencer", where),
        etag=_optional_text(s3_object, "eTag", where),
        size=size,
        event_time=_optional_text(record, "eventTime", where),
    )


def parse_event(event: object) -> list[Upload]:
    """Every record of an S3 notification, strictly: the first malformed record raises.

    The test event has no records and yields an empty list. Callers that must try the good
    records of a partly malformed event use `event_records` and `parse_record` instead.
    """
    if is_test_event(event):
        return []
    return [parse_record(record, index) for index, record in enumerate(event_records(event))]


def upload_identity(upload: Upload) -> tuple[str, ...] | None:
    """What tells this upload apart from another upload of the same key, or None if nothing.

    A versionId is unique per upload. Unversioned, the sequencer is unique per key and event.
    S3 always sends a sequencer for uploads, but emulators (moto) do not: then the eTag, size
    and eventTime stand in. A duplicate delivery or a retry repeats the same record, so all of
    these are stable for it; a new upload of the same key has a later eventTime.
    """
    if upload.version_id and upload.version_id != UNVERSIONED:
        return ("version", upload.version_id)
    if upload.sequencer:
        return ("sequencer", upload.sequencer)
    if upload.etag or upload.size is not None or upload.event_time:
        size = "" if upload.size is None else str(upload.size)
        return ("object", upload.etag or "", size, upload.event_time or "")
    return None


def job_id(upload: Upload) -> str:
    """The upload's job id: 32 hex characters, the same for every delivery of one upload.

    Derived from bucket, key and upload identity, so a repeated delivery lands on the record the
    first one made. A record with no identity at all gets a random id: a possible duplicate job
    is preferred to a silently skipped new upload.
    """
    identity = upload_identity(upload)
    if identity is None:
        return uuid.uuid4().hex
    # JSON of a list keeps the fields apart: no key/identity split can collide with another.
    material = json.dumps([upload.bucket, upload.key, *identity])  # ASCII: \u-escaped
    return hashlib.sha256(material.encode("ascii")).hexdigest()[:32]


def _mapping(
    parent: Mapping[str, object], name: str, where: str, path: str = ""
) -> Mapping[str, object]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        raise MalformedEventError(f"malformed {where}: {path}{name} is missing or not an object")
    return value


def _text(parent: Mapping[str, object], name: str, where: str, path: str = "") -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedEventError(
            f"malformed {where}: {path}{name} is missing or not a non-empty string"
        )
    return value


def _optional_text(parent: Mapping[str, object], name: str, where: str) -> str | None:
    value = parent.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEventError(f"malformed {where}: {name} must be a string")
    return value
