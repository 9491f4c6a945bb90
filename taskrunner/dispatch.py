"""The runner's two ways in: S3's upload event (the direct path) and a batch from the backlog.

Direct path: a task for every upload in the event; an upload that must wait is parked in the
backlog and the invocation succeeds; it raises, naming each upload, only for records that are
malformed, that ECS rejects, or that could not be parked, so that Lambda retries the event and
then sends it to the dead-letter queue.

Backlog path: the same starts for every message of the batch; the answer names the messages
to keep (`batchItemFailures`), each made invisible for its next, longer delay. What waiting
cannot mend goes to the dead-letter queue at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypedDict

from backlog import (
    BatchResponse,
    Verdict,
    dead_letter,
    decide,
    defer,
    park,
    parse_body,
    wait_metric,
)
from outcomes import RecordResult
from runner_settings import RunnerSettings
from services import Services
from task_starter import skip_reason, start_uploads
from upload_events import (
    REDRIVE_FIELD,
    BacklogMessage,
    MalformedEventError,
    Upload,
    backlog_messages,
    event_records,
    is_backlog_event,
    is_test_event,
    parse_record,
)

logger = logging.getLogger("taskrunner")


class Summary(TypedDict):
    """The direct path's answer: started key -> task ARN, skipped and parked key -> reason."""

    started: dict[str, str]
    skipped: dict[str, str]
    parked: dict[str, str]


class TasksNotStartedError(RuntimeError):
    """Some uploads got no task; raised so that Lambda retries the event, then dead-letters it."""

    def __init__(self, message: str, failures: dict[str, str], summary: Summary) -> None:
        super().__init__(message)
        self.failures = failures  # "s3://bucket/key" or "malformed record N" -> reason
        self.summary = summary  # what did succeed, for callers such as a redrive tool


class MalformedRecordsError(TasksNotStartedError, MalformedEventError):
    """Some records could not be read at all; the well-formed ones were still tried."""


def process_event(
    event: object,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> Summary | BatchResponse:
    """Either path, by the event's shape. `remaining_ms` is the Lambda context's clock."""
    if is_backlog_event(event):
        return process_backlog(event, settings, services, remaining_ms=remaining_ms)
    return process_uploads(event, settings, services, remaining_ms=remaining_ms)


def _read_records(
    records: Sequence[object], redrive_of: object, settings: RunnerSettings
) -> tuple[dict[int, RecordResult], dict[int, Upload]]:
    """Each record read: (results already known: malformed or skipped; uploads to start)."""
    known: dict[int, RecordResult] = {}
    to_start: dict[int, Upload] = {}
    for index, record in enumerate(records):
        try:
            upload = parse_record(record, index)
        except MalformedEventError as error:
            known[index] = RecordResult("malformed", reason=str(error))
            continue
        if isinstance(redrive_of, str) and redrive_of:
            upload = replace(upload, redrive_of=redrive_of)
        reason = skip_reason(upload, settings)
        if reason is not None:
            known[index] = RecordResult("skipped", upload, reason=reason)
        else:
            to_start[index] = upload
    return known, to_start


def process_uploads(
    event: object,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> Summary:
    """The direct path (see the module's docstring)."""
    summary: Summary = {"started": {}, "skipped": {}, "parked": {}}
    if is_test_event(event):
        logger.info(json.dumps({"outcome": "ignored", "reason": "s3:TestEvent"}))
        return summary
    records = event_records(event)  # ValueError for an event that is not S3's at all
    redrive_of = event.get(REDRIVE_FIELD) if isinstance(event, Mapping) else None
    results, to_start = _read_records(records, redrive_of, settings)
    started = start_uploads(list(to_start.values()), settings, services, remaining_ms=remaining_ms)
    for index, result in zip(to_start, started, strict=True):
        waits = result.outcome == "waiting"
        results[index] = (
            park(records[index], result, settings, services, redrive_of=redrive_of)
            if waits
            else result
        )
    ordered = [results[index] for index in range(len(records))]
    for index, result in enumerate(ordered):
        _summarise(result, summary)
        logger.log(logging.ERROR if result.is_error else logging.INFO, result.log_line(index))
    _raise_for_failures(ordered, len(records), summary)
    return summary


def process_backlog(
    event: object,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> BatchResponse:
    """The backlog path (see the module's docstring)."""
    messages = backlog_messages(event)
    problems: dict[str, list[str]] = {m.message_id: [] for m in messages}
    known: dict[str, dict[int, RecordResult]] = {}
    to_start: list[tuple[str, int, Upload]] = []
    for message in messages:
        body, problem = parse_body(message)
        if problem is not None:
            problems[message.message_id].append(problem)
            continue
        assert isinstance(body, Mapping)
        try:
            records = event_records(body)
        except MalformedEventError as error:
            problems[message.message_id].append(str(error))
            continue
        results, uploads = _read_records(records, body.get(REDRIVE_FIELD), settings)
        known[message.message_id] = results
        problems[message.message_id] += [
            r.reason or "malformed" for r in results.values() if r.outcome == "malformed"
        ]
        to_start += [(message.message_id, index, upload) for index, upload in uploads.items()]

    started = start_uploads(
        [upload for _, _, upload in to_start], settings, services, remaining_ms=remaining_ms
    )
    for (message_id, index, _), result in zip(to_start, started, strict=True):
        known.setdefault(message_id, {})[index] = result

    by_message = {m.message_id: list(known.get(m.message_id, {}).values()) for m in messages}
    return _settle(
        messages, by_message, problems=problems, known=known, settings=settings, services=services
    )


def _settle(
    messages: list[BacklogMessage],
    results: Mapping[str, list[RecordResult]],
    *,
    problems: Mapping[str, list[str]],
    known: Mapping[str, dict[int, RecordResult]],
    settings: RunnerSettings,
    services: Services,
) -> BatchResponse:
    """Each message's fate from its results: deleted, deferred or dead-lettered."""
    now = services.clock()
    verdicts = [decide(m, results[m.message_id], now, problems[m.message_id]) for m in messages]
    deferred = [v for v in verdicts if v.action == "defer"]
    delays = defer(deferred, settings, services)
    if deferred:
        waited = max(now - verdict.message.sent_at for verdict in deferred)
        services.emit_metric(wait_metric(settings.backlog_queue_url, waited, now))
    keep: list[str] = []
    for verdict in verdicts:
        message_id = verdict.message.message_id
        if verdict.action == "defer":
            keep.append(message_id)
        elif verdict.action == "dead-letter" and not dead_letter(verdict, settings, services):
            keep.append(message_id)  # back after the visibility timeout, to try again
        _log_message(verdict, known.get(message_id, {}), delays.get(message_id))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in keep]}


def _log_message(verdict: Verdict, results: dict[int, RecordResult], delay: int | None) -> None:
    level = logging.ERROR if verdict.action == "dead-letter" else logging.INFO
    if not logger.isEnabledFor(level):
        return  # a big batch defers thousands of messages: no line is built for nothing
    message = verdict.message
    extra: dict[str, object] = {
        "messageId": message.message_id,
        "receiveCount": message.receive_count,
        "message": verdict.action,
    }
    if delay is not None:
        extra["nextTryInSeconds"] = delay
    if verdict.action == "dead-letter":
        extra["deadLetterReason"] = verdict.reason
    if not results:
        logger.log(level, RecordResult("malformed", reason=verdict.reason).log_line(0, **extra))
    for index, result in sorted(results.items()):
        logger.log(level, result.log_line(index, **extra))


def _summarise(result: RecordResult, summary: Summary) -> None:
    if result.upload is None:
        return
    key = result.upload.key
    if result.task_arn is not None:
        summary["started"][key] = result.task_arn
    elif result.outcome in ("already-started", "skipped"):
        summary["skipped"][key] = result.reason or result.outcome
    elif result.outcome == "parked":
        summary["parked"][key] = result.reason or "waiting for capacity"


def _raise_for_failures(results: list[RecordResult], total: int, summary: Summary) -> None:
    failures: dict[str, str] = {}
    for index, result in enumerate(results):
        if result.outcome == "failed" and result.upload is not None:
            failures[result.upload.location] = result.reason or "unknown"
        elif result.outcome == "malformed":
            where = f"malformed record {index}"
            failures[where] = (result.reason or "").removeprefix(f"{where}: ") or "unreadable"
    if not failures:
        return
    listing = "; ".join(f"{where}: {reason}" for where, reason in failures.items())
    message = (
        f"{len(failures)} of {total} records started no task (Lambda retries the event, "
        f"then sends it to the dead-letter queue): {listing}"
    )
    malformed = any(result.outcome == "malformed" for result in results)
    error_type = MalformedRecordsError if malformed else TasksNotStartedError
    raise error_type(message, failures, summary)
