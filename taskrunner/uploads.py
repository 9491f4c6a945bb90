"""Uploads come in: S3's event (the direct path), or a batch from the backlog. Each upload gets
its job record, then the free slots are filled, oldest job first (this one may be it).

Direct path: it raises, naming each upload, only for records that are malformed or whose job
could be neither recorded nor parked in the backlog, so that Lambda retries the event and then
sends it to the dead-letter queue. A duplicate delivery finds the record the first one made and
changes nothing. An event carrying `redriveOf` (from `jobctl redrive`) makes its failed job
wait again.

Backlog path: the same for every message of the batch; a message whose jobs could not be
recorded again is kept (`batchItemFailures`) and hidden for longer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict

import job_record
import reports
from backlog import (
    BatchResponse,
    dead_letter,
    defer,
    give_up_reason,
    park,
    parse_body,
)
from job_record import Job
from job_store import Conflict, JobStore, StoreError
from runner_settings import RunnerSettings
from scheduler import Scheduler
from services import Services
from upload_events import (
    REDRIVE_FIELD,
    MalformedEventError,
    Upload,
    backlog_messages,
    event_records,
    is_test_event,
    job_id,
    parse_record,
)

logger = logging.getLogger("taskrunner")


class Summary(TypedDict):
    """The direct path's answer, key -> task ARN or reason."""

    started: dict[str, str]  # its task started in this invocation
    waiting: dict[str, str]  # recorded; waits for a slot
    skipped: dict[str, str]  # nothing to start (a removal, a result, a duplicate delivery)
    parked: dict[str, str]  # the job table could not take it: it waits in the backlog


class TasksNotStartedError(RuntimeError):
    """Some uploads got no job; raised so that Lambda retries the event, then dead-letters it."""

    def __init__(self, message: str, failures: dict[str, str], summary: Summary) -> None:
        super().__init__(message)
        self.failures = failures  # "s3://bucket/key" or "malformed record N" -> reason
        self.summary = summary  # what did succeed, for callers such as a redrive tool


class MalformedRecordsError(TasksNotStartedError, MalformedEventError):
    """Some records could not be read at all; the well-formed ones were still recorded."""


@dataclass
class Intake:
    """What recording one event's records came to."""

    jobs: list[Job] = field(default_factory=list)  # recorded, or found recorded, and waiting
    lines: list[dict[str, object]] = field(default_factory=list)  # one log line per record
    problems: dict[str, str] = field(default_factory=dict)  # where -> what went wrong
    unrecorded: list[tuple[int, str]] = field(default_factory=list)  # record index, why


def _line(index: int, outcome: str, upload: Upload | None, **extra: object) -> dict[str, object]:
    line: dict[str, object] = {"record": index, "outcome": outcome}
    if upload is not None:
        line |= {"bucket": upload.bucket, "key": upload.key, "event": upload.event_name}
        if upload.version_id:
            line["versionId"] = upload.version_id
    return line | extra


def skip_reason(upload: Upload, settings: RunnerSettings) -> str | None:
    """Why this record gets no job, or None if it should."""
    if not upload.is_upload:
        return f"{upload.event_name} is not an upload (only ObjectCreated:* starts a task)"
    if upload.key.startswith(settings.result_prefix):
        return (
            f"the key is under RESULT_PREFIX {settings.result_prefix!r}: a task's own result, "
            "which must not start another task"
        )
    return None


def job_for(upload: Upload, now: float) -> Job:
    return job_record.new_job(
        bucket=upload.bucket,
        key=upload.key,
        job_id=job_id(upload),
        now=now,
        version_id=upload.version_id,
        uploaded_at=upload.event_time,
        size=upload.size,
    )


class Recorder:
    """Records uploads' jobs; a redrive makes a failed one wait again."""

    def __init__(self, store: JobStore, services: Services) -> None:
        self.store = store
        self.services = services

    def record(self, upload: Upload) -> tuple[Job, str]:
        """The upload's job and what recording it did: recorded, duplicate or redriven."""
        named = reports.job_id_named(upload.redrive_of)
        if named is not None:
            # The job the failure report named, whatever identity the replayed event kept (a
            # report without the upload's sequencer gives the event another one).
            job = self.store.get(upload.bucket, upload.key, named)
            if job is not None:
                return self._redrive_or_keep(job, upload.redrive_of)
        job, created = self.store.create(job_for(upload, self.services.clock()))
        if created:
            totals = self.store.count(recorded=1)
            if totals is not None and totals.in_progress == 1:
                # The first job in progress: a batch begins (what `jobctl status` measures).
                self.store.start_batch(
                    replace(totals, recorded=totals.recorded - 1), job.recorded_at
                )
            return job, "recorded"
        return self._redrive_or_keep(job, upload.redrive_of)

    def _redrive_or_keep(self, job: Job, redrive_of: str | None) -> tuple[Job, str]:
        if redrive_of and job.state == "failed" and job.last_redrive_of != redrive_of:
            return self.redrive(job, redrive_of), "redriven"
        return job, "duplicate"

    def redrive(self, job: Job, redrive_of: str) -> Job:
        """The failed job waits again, once per `redrive_of`; the job as it is now recorded."""
        for _ in range(2):  # a record changing under us (a report being marked) is re-read once
            try:
                after = job_record.redriven(job, now=self.services.clock(), redrive_of=redrive_of)
                written = self.store.apply(job, after)
            except job_record.TransitionError:
                return job
            except Conflict:
                fresh = self.store.reread(job)
                if fresh is None:
                    break
                job = fresh
                continue
            self.store.count(failed=-1)
            return written
        return job

    def take(
        self, records: Sequence[object], redrive_of: object, settings: RunnerSettings
    ) -> Intake:
        """Each record read, skipped or recorded; what could not be recorded is listed."""
        intake = Intake()
        seen: set[str] = set()
        for index, record in enumerate(records):
            try:
                upload = parse_record(record, index)
            except MalformedEventError as error:
                intake.problems[f"malformed record {index}"] = str(error).removeprefix(
                    f"malformed record {index}: "
                )
                intake.lines.append(_line(index, "malformed", None, reason=str(error)))
                continue
            if isinstance(redrive_of, str) and redrive_of:
                upload = replace(upload, redrive_of=redrive_of)
            reason = skip_reason(upload, settings)
            if reason is not None:
                intake.lines.append(_line(index, "skipped", upload, reason=reason))
                continue
            try:
                job, how = self.record(upload)
            except StoreError as error:
                intake.unrecorded.append((index, str(error)))
                intake.lines.append(_line(index, "unrecorded", upload, reason=str(error)))
                continue
            intake.lines.append(_line(index, how, upload, jobId=job.job_id, state=job.state))
            if job.state == "waiting" and job.job_id not in seen:
                seen.add(job.job_id)
                intake.jobs.append(job)
        return intake


def handle_uploads(
    event: object,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> Summary:
    """The direct path (see the module's docstring)."""
    summary: Summary = {"started": {}, "waiting": {}, "skipped": {}, "parked": {}}
    if is_test_event(event):
        logger.info(json.dumps({"outcome": "ignored", "reason": "s3:TestEvent"}))
        return summary
    records = event_records(event)  # ValueError for an event that is not S3's at all
    redrive_of = event.get(REDRIVE_FIELD) if isinstance(event, Mapping) else None
    store = services.job_store(settings)
    intake = Recorder(store, services).take(records, redrive_of, settings)
    for index, why in intake.unrecorded:
        line = intake.lines[index]
        key = str(line.get("key"))
        refused = park(records[index], redrive_of, settings, services)
        if refused is None:
            summary["parked"][key] = (
                f"the job table could not take it ({why}); it waits in the backlog"
            )
            line["outcome"] = "parked"
        else:
            intake.problems[f"s3://{line.get('bucket')}/{key}"] = (
                f"{why}; parking it in the backlog failed: {refused}"
            )
            line["outcome"] = "failed"
    report = Scheduler(store, settings, services, remaining_ms=remaining_ms).fill(
        intake.jobs, most=len(intake.jobs)
    )
    for job in intake.jobs:
        if job.location in report.started:
            summary["started"][job.key] = report.started[job.location]
        else:
            summary["waiting"][job.key] = (
                f"waits for a slot ({report.stopped_because or 'others first'})"
            )
    for line in intake.lines:
        if line["outcome"] in ("skipped", "duplicate"):
            summary["skipped"][str(line["key"])] = str(line.get("reason") or "recorded earlier")
        level = logging.ERROR if line["outcome"] in ("malformed", "failed") else logging.INFO
        logger.log(level, json.dumps(line, ensure_ascii=False))
    if intake.problems:
        _raise(intake.problems, len(records), summary)
    return summary


def _raise(problems: dict[str, str], total: int, summary: Summary) -> None:
    listing = "; ".join(f"{where}: {reason}" for where, reason in problems.items())
    message = (
        f"{len(problems)} of {total} records got no job (Lambda retries the event, then sends "
        f"it to the dead-letter queue): {listing}"
    )
    malformed = any(where.startswith("malformed") for where in problems)
    error_type = MalformedRecordsError if malformed else TasksNotStartedError
    raise error_type(message, problems, summary)


def handle_backlog(
    event: object,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> BatchResponse:
    """The backlog path (see the module's docstring)."""
    store = services.job_store(settings)
    recorder = Recorder(store, services)
    keep: list[str] = []
    retry = []
    own: list[Job] = []
    now = services.clock()
    for message in backlog_messages(event):
        body, problem = parse_body(message)
        problems: list[str] = [] if problem is None else [problem]
        unrecorded: list[str] = []
        if body is not None:
            try:
                intake = recorder.take(event_records(body), body.get(REDRIVE_FIELD), settings)
            except MalformedEventError as error:
                problems.append(str(error))
            else:
                problems += [f"{where}: {why}" for where, why in intake.problems.items()]
                unrecorded = [why for _, why in intake.unrecorded]
                own += intake.jobs
                for line in intake.lines:
                    logger.info(
                        json.dumps({"messageId": message.message_id, **line}, ensure_ascii=False)
                    )
        give_up = "; ".join(problems) or (
            give_up_reason(message, now, unrecorded[0]) if unrecorded else None
        )
        if give_up:
            if not dead_letter(message, give_up, settings, services):
                keep.append(message.message_id)  # back after the visibility timeout
            logger.error(
                json.dumps(
                    {"messageId": message.message_id, "outcome": "dead-lettered", "reason": give_up}
                )
            )
        elif unrecorded:
            keep.append(message.message_id)
            retry.append(message)
    defer(retry, settings, services)
    Scheduler(store, settings, services, remaining_ms=remaining_ms).fill(own, most=len(own))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in keep]}
