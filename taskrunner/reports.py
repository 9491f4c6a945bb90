"""Telling people: a failed job's report (once, with its history) and the runner's metrics.

A job whose task ran and failed for good goes to the failed-jobs queue, with every attempt; a
job that never ran (ECS refused it, or it waited past the limit) goes to the dead-letter queue
as the S3 event that replays it, the reason in a message attribute, as the runner always did.
Both carry `redriveOf`, so that `jobctl redrive` replaying a message twice redrives once.

Metrics are embedded-metric-format lines on stdout, which CloudWatch Logs turns into metrics
(namespace S3FargateJobs, dimension Jobs = the job table): the dashboard and alarms read them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

import job_record
from botocore.exceptions import BotoCoreError, ClientError
from job_record import Attempt, Job
from job_store import Conflict, JobStore, StoreError
from runner_settings import RunnerSettings
from services import Services
from upload_events import REDRIVE_FIELD

logger = logging.getLogger("taskrunner")

METRIC_NAMESPACE = "S3FargateJobs"
METRIC_DIMENSION = "Jobs"
CAUSE_DIMENSION = "Cause"
# The job's log streams are <prefix>/<container>/<task id> (infra/job.py LOG_STREAM_PREFIX).
LOG_STREAM_PREFIX = "job"
REASON_ATTRIBUTE = "reason"
MAX_REASON_CHARACTERS = 4000
REPLAY = "python -m jobctl redrive --stack <stack>"


def log_stream(attempt: Attempt, container: str) -> str | None:
    task_id = attempt.task_id
    return None if task_id is None else f"{LOG_STREAM_PREFIX}/{container}/{task_id}"


def attempt_summary(attempt: Attempt, container: str) -> dict[str, Any]:
    """One attempt as the failed-jobs message gives it: what is known of it, and its logs."""
    summary = {
        name: value
        for name, value in attempt.fields().items()
        if value is not None and name not in ("claim", "stopRequested")
    }
    stream = log_stream(attempt, container)
    if stream is not None:
        summary["logStream"] = stream
    return summary


def redrive_of(job: Job) -> str:
    """What a redrive of this failure names: the job and how far it had come."""
    return f"{job.job_id}#{job.claims}"


_REDRIVE_OF = re.compile(r"([0-9a-f]{32})#\d+")


def job_id_named(redrive_of: object) -> str | None:
    """The job id a `redrive_of` names, if the runner wrote it (older ones name a task)."""
    found = _REDRIVE_OF.fullmatch(redrive_of) if isinstance(redrive_of, str) else None
    return found[1] if found else None


def failed_job_message(job: Job, settings: RunnerSettings) -> dict[str, Any]:
    """The failed-jobs queue's message: what failed, why, every attempt, where the logs are."""
    last = job.current
    environment = [
        {"name": "S3_BUCKET", "value": job.bucket},
        {"name": "S3_KEY", "value": job.key},
    ]
    if job.version_id:
        environment.append({"name": "S3_VERSION_ID", "value": job.version_id})
    message: dict[str, Any] = {
        "summary": "A Fargate job failed",
        "bucket": job.bucket,
        "key": job.key,
        "versionId": job.version_id,
        "jobId": job.job_id,
        "reason": job.reason,
        "attempts": [attempt_summary(a, settings.container_name) for a in job.attempts],
        "attemptCount": job.attempt_count,
        # The last attempt's fields at the top, as the messages of earlier versions had them.
        "environment": environment,
        "logGroup": settings.job_log_group,
        REDRIVE_FIELD: redrive_of(job),
        "replay": REPLAY,
    }
    if last is not None:
        message |= {
            "taskArn": last.task_arn,
            "stopCode": last.stop_code,
            "stoppedReason": last.stopped_reason,
            "exitCode": last.exit_code,
            "containerReason": last.container_reason,
            "logStream": log_stream(last, settings.container_name),
        }
    return message


def replay_event(job: Job) -> dict[str, Any]:
    """The S3 event that records the job again (a dead letter's body), encoded as S3 does."""
    s3_object: dict[str, Any] = {"key": quote_plus(job.key, safe="/")}
    if job.version_id:
        s3_object["versionId"] = job.version_id
    if job.size is not None:
        s3_object["size"] = job.size
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": job.bucket}, "object": s3_object},
    }
    if job.uploaded_at:
        record["eventTime"] = job.uploaded_at
    return {"Records": [record], REDRIVE_FIELD: redrive_of(job)}


class Reporter:
    """Sends failures (each once) and writes metric lines."""

    def __init__(self, store: JobStore, settings: RunnerSettings, services: Services) -> None:
        self.store = store
        self.settings = settings
        self.services = services

    def failure(self, job: Job) -> Job:
        """Report a failed job unless it was; returns the record (marked reported once sent).

        A report that cannot be sent leaves the job unreported: the sweep sends it later.
        """
        if job.state != "failed" or job.reported:
            return job
        ran = any(attempt.task_arn for attempt in job.attempts)
        try:
            if ran:
                self.services.sqs.send_message(
                    QueueUrl=self.settings.failed_jobs_queue_url,
                    MessageBody=json.dumps(
                        failed_job_message(job, self.settings), ensure_ascii=False
                    ),
                )
            else:
                self.services.sqs.send_message(
                    QueueUrl=self.settings.dead_letter_queue_url,
                    MessageBody=json.dumps(replay_event(job), ensure_ascii=False),
                    MessageAttributes={
                        REASON_ATTRIBUTE: {
                            "DataType": "String",
                            "StringValue": (job.reason or "unknown")[:MAX_REASON_CHARACTERS],
                        }
                    },
                )
        except (ClientError, BotoCoreError) as error:
            logger.error(  # noqa: TRY400 - one line, no traceback: the sweep tries again
                json.dumps({"job": job.location, "report": "not sent", "error": str(error)})
            )
            return job
        logger.error(
            json.dumps(
                {
                    "job": job.location,
                    "outcome": "failed",
                    "reason": job.reason,
                    "attempts": job.attempt_count,
                    "reportedTo": "failed-jobs queue" if ran else "dead-letter queue",
                },
                ensure_ascii=False,
            )
        )
        try:
            return self.store.apply(job, job_record.reported(job))
        except (Conflict, StoreError):
            return job  # sent; the sweep may send it again, which a redrive tolerates

    # --- metrics ---------------------------------------------------------------------------------

    def metric(
        self,
        values: Mapping[str, float],
        *,
        units: Mapping[str, str] | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        self.services.emit_metric(
            metric_line(
                values,
                table=self.settings.state_table,
                now=self.services.clock(),
                units=units,
                dimensions=dimensions,
            )
        )

    def ended(self, job: Job) -> None:
        """Metrics for an attempt that stopped: the outcome, a retry's cause, its duration."""
        attempt = job.current
        values: dict[str, float] = {}
        if job.state == "succeeded":
            values["JobsSucceeded"] = 1
        elif job.state == "failed":
            values["JobsFailed"] = 1
        if attempt is not None and attempt.started_at and attempt.stopped_at:
            values["TaskDurationSeconds"] = max(0.0, attempt.stopped_at - attempt.started_at)
        if values:
            self.metric(values, units={"TaskDurationSeconds": "Seconds"})
        if job.state == "waiting" and attempt is not None and attempt.cause:
            self.metric({"Retries": 1}, dimensions={CAUSE_DIMENSION: attempt.cause})


def metric_line(
    values: Mapping[str, float],
    *,
    table: str,
    now: float,
    units: Mapping[str, str] | None = None,
    dimensions: Mapping[str, str] | None = None,
) -> str:
    """One embedded-metric-format line: `values` under the Jobs dimension (and `dimensions`);
    each a Count unless `units` says otherwise."""
    names = [METRIC_DIMENSION, *(dimensions or {})]
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(now * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": METRIC_NAMESPACE,
                        "Dimensions": [names],
                        "Metrics": [
                            {"Name": name, "Unit": (units or {}).get(name, "Count")}
                            for name in values
                        ],
                    }
                ],
            },
            METRIC_DIMENSION: table,
            **(dimensions or {}),
            **{name: round(value, 3) for name, value in values.items()},
        }
    )
