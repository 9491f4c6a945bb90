"""Plan and start one Fargate task per upload, and summarise what happened to every record.

`build_run_task_request` is pure; `start_task` makes one RunTask call; `process_event` tries
every record of an event and raises, naming each upload left without a task, only at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypedDict

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from runner_settings import RunnerSettings
from upload_events import (
    REDRIVE_FIELD,
    MalformedEventError,
    Upload,
    client_token,
    event_records,
    is_test_event,
    parse_record,
)

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient
    from mypy_boto3_ecs.type_defs import KeyValuePairTypeDef, RunTaskRequestTypeDef

# One value for every upload-started task, so ListTasks(startedBy=...) finds them all; within
# the 36 characters (letters, digits, "-", "_", "/") the issue allows.
STARTED_BY = "s3-upload"
# RunTask answers within a second or two; a stuck connection should be retried, not waited on
# for botocore's default 60 s.
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
# Standard mode retries ThrottlingException with jittered exponential backoff, 1 s doubling to
# a 20 s cap: 8 attempts wait up to 1+2+4+8+16+20+20 = 71 s (35 s on average), long enough for
# ECS's 20 calls/s token bucket to refill after a burst of hundreds of uploads.
MAX_ATTEMPTS = 8
RETRY_MODE: Literal["standard"] = "standard"
# Not starting a record with less time left than this turns a Lambda timeout (which names no
# key) into an error naming the untried keys; Lambda's retry tries them again.
RECORD_TIME_RESERVE_MS = 2 * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) * 1000

logger = logging.getLogger("taskrunner")

Outcome = Literal["started", "already-started", "skipped", "failed", "malformed"]


class Summary(TypedDict):
    """What the handler returns: started key -> task ARN, skipped key -> reason."""

    started: dict[str, str]
    skipped: dict[str, str]


class TasksNotStartedError(RuntimeError):
    """Some uploads got no task; raised so that Lambda retries the event, then dead-letters it."""

    def __init__(self, message: str, failures: dict[str, str], summary: Summary) -> None:
        super().__init__(message)
        self.failures = failures  # "s3://bucket/key" or "malformed record N" -> reason
        self.summary = summary  # what did succeed, for callers such as a redrive tool


class MalformedRecordsError(TasksNotStartedError, MalformedEventError):
    """Some records could not be read at all; the well-formed ones were still tried."""


@dataclass(frozen=True)
class RecordResult:
    """What happened to one record; `task_arn` for started tasks, `reason` otherwise."""

    outcome: Outcome
    upload: Upload | None = None
    task_arn: str | None = None
    reason: str | None = None

    def log_line(self, index: int) -> str:
        line: dict[str, object] = {"record": index, "outcome": self.outcome}
        if self.upload is not None:
            line |= {
                "bucket": self.upload.bucket,
                "key": self.upload.key,
                "event": self.upload.event_name,
            }
            if self.upload.version_id:
                line["versionId"] = self.upload.version_id
        if self.task_arn is not None:
            line["taskArn"] = self.task_arn
        if self.reason is not None:
            line["reason"] = self.reason
        return json.dumps(line, ensure_ascii=False)


def client_config(
    *,
    max_attempts: int = MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Config:
    """The ECS client's retry and timeout settings (tests shorten the timeouts)."""
    return Config(
        retries={"mode": RETRY_MODE, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def make_ecs_client(config: Config | None = None) -> ECSClient:
    """An ECS client for the Lambda's region (AWS_REGION), with the runner's retry settings."""
    return boto3.client("ecs", config=config or client_config())


def skip_reason(upload: Upload, settings: RunnerSettings) -> str | None:
    """Why this record starts no task, or None if it should start one."""
    if not upload.is_upload:
        return f"{upload.event_name} is not an upload (only ObjectCreated:* starts a task)"
    if upload.key.startswith(settings.result_prefix):
        return (
            f"the key is under RESULT_PREFIX {settings.result_prefix!r}: a task's own result, "
            "which must not start another task"
        )
    return None


def build_run_task_request(upload: Upload, settings: RunnerSettings) -> RunTaskRequestTypeDef:
    """The RunTask parameters that start the job for this upload."""
    environment: list[KeyValuePairTypeDef] = [
        {"name": "S3_BUCKET", "value": upload.bucket},
        {"name": "S3_KEY", "value": upload.key},
    ]
    if upload.version_id:
        environment.append({"name": "S3_VERSION_ID", "value": upload.version_id})
    request: RunTaskRequestTypeDef = {
        "cluster": settings.cluster_arn,
        "taskDefinition": settings.task_definition_arn,
        "count": 1,
        # Never together with launchType: ECS rejects requests carrying both.
        "capacityProviderStrategy": [{"capacityProvider": settings.capacity_provider, "weight": 1}],
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": list(settings.subnets),
                "securityGroups": list(settings.security_groups),
                "assignPublicIp": settings.assign_public_ip,
            }
        },
        "overrides": {
            "containerOverrides": [{"name": settings.container_name, "environment": environment}]
        },
        "startedBy": STARTED_BY,
        "propagateTags": "TASK_DEFINITION",
    }
    token = client_token(upload)
    if token is not None:
        request["clientToken"] = token
    return request


def start_task(ecs: ECSClient, upload: Upload, settings: RunnerSettings) -> RecordResult:
    """One RunTask call (botocore retries inside it); every answer becomes a RecordResult."""
    request = build_run_task_request(upload, settings)
    try:
        answer = ecs.run_task(**request)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        if code == "ConflictException":
            # The same clientToken already started a task (with other parameters, e.g. before a
            # deployment changed the task definition): this upload has its task.
            # botocore puts the modelled members of an error (here resourceIds) at the top level.
            existing = error.response.get("resourceIds")
            arn = (
                existing[0]
                if isinstance(existing, list) and existing and isinstance(existing[0], str)
                else None
            )
            return RecordResult(
                "already-started",
                upload,
                task_arn=arn,
                reason=f"ConflictException: a task for this upload was started earlier ({message})",
            )
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        return RecordResult(
            "failed", upload, reason=f"{code}: {message} (after {attempts + 1} attempts)"
        )
    except BotoCoreError as error:
        # Connection errors and timeouts, raised once botocore's retries are spent.
        return RecordResult("failed", upload, reason=f"{type(error).__name__}: {error}")
    failures = answer.get("failures") or []
    if failures:
        reasons = "; ".join(
            f"{failure.get('reason', 'unknown reason')}"
            + (f" ({failure['detail']})" if failure.get("detail") else "")
            for failure in failures
        )
        return RecordResult("failed", upload, reason=f"RunTask failures: {reasons}")
    tasks = answer.get("tasks") or []
    if not tasks or "taskArn" not in tasks[0]:
        return RecordResult("failed", upload, reason="RunTask answered with no task and no failure")
    return RecordResult("started", upload, task_arn=tasks[0]["taskArn"])


def process_event(
    event: object,
    settings: RunnerSettings,
    ecs: ECSClient,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> Summary:
    """Start a task for every upload in the event; raise at the end if any upload got none.

    `remaining_ms` (the Lambda context's clock) stops new calls when too little time is left.
    """
    summary: Summary = {"started": {}, "skipped": {}}
    if is_test_event(event):
        logger.info(json.dumps({"outcome": "ignored", "reason": "s3:TestEvent"}))
        return summary
    records = event_records(event)  # ValueError for an event that is not S3's at all
    results: list[RecordResult] = []
    tokens_started: dict[str, RecordResult] = {}
    redrive_of = event.get(REDRIVE_FIELD) if isinstance(event, Mapping) else None
    for index, record in enumerate(records):
        result = _process_record(
            index,
            record,
            redrive_of=redrive_of if isinstance(redrive_of, str) else None,
            settings=settings,
            ecs=ecs,
            remaining_ms=remaining_ms,
            tokens_started=tokens_started,
            summary=summary,
        )
        results.append(result)
        failed = result.outcome in ("failed", "malformed")
        logger.log(logging.ERROR if failed else logging.INFO, result.log_line(index))
    _raise_for_failures(results, len(records), summary)
    return summary


def _process_record(
    index: int,
    record: object,
    *,
    redrive_of: str | None,
    settings: RunnerSettings,
    ecs: ECSClient,
    remaining_ms: Callable[[], int] | None,
    tokens_started: dict[str, RecordResult],
    summary: Summary,
) -> RecordResult:
    try:
        upload = parse_record(record, index)
    except MalformedEventError as error:
        return RecordResult("malformed", reason=str(error))
    if redrive_of:
        upload = replace(upload, redrive_of=redrive_of)
    reason = skip_reason(upload, settings)
    if reason is not None:
        summary["skipped"][upload.key] = reason
        return RecordResult("skipped", upload, reason=reason)
    token = client_token(upload)
    if token is not None and token in tokens_started:
        # The same upload twice in one event: ECS would answer with the same task anyway.
        earlier = tokens_started[token]
        return RecordResult(earlier.outcome, upload, earlier.task_arn, "repeated in this event")
    if remaining_ms is not None and remaining_ms() < RECORD_TIME_RESERVE_MS:
        return RecordResult(
            "failed",
            upload,
            reason=f"not tried: under {RECORD_TIME_RESERVE_MS // 1000} s left in this invocation",
        )
    result = start_task(ecs, upload, settings)
    if result.task_arn is not None:
        summary["started"][upload.key] = result.task_arn
    elif result.outcome == "already-started":
        summary["skipped"][upload.key] = result.reason or "already started"
    if token is not None and result.outcome in ("started", "already-started"):
        tokens_started[token] = result
    return result


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
