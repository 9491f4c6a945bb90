"""A task of the job changed state: ECS's "ECS Task State Change" event, through EventBridge.

EventBridge delivers each event at least once and not in order. The record decides what counts:
an event names its job (JOB_ID, JOB_ATTEMPT, JOB_CLAIM in the task's environment) and applies
only to the attempt and claim under way; a duplicate, or a late event of an earlier attempt,
finds it over and changes nothing. A stop frees the slot, so the oldest waiting jobs start at
once. The sweep reads the same facts from DescribeTasks when an event never comes, and settles
them here too.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import job_record
import reports
from job_record import Job, Stop
from job_store import Conflict, JobStore
from retry_policy import after_stop
from runner_settings import RunnerSettings
from scheduler import Scheduler
from services import Services
from upload_events import MalformedEventError

logger = logging.getLogger("taskrunner")

EVENT_SOURCE = "aws.ecs"
DETAIL_TYPE = "ECS Task State Change"


def is_task_event(event: object) -> bool:
    return (
        isinstance(event, Mapping)
        and event.get("source") == EVENT_SOURCE
        and event.get("detail-type") == DETAIL_TYPE
    )


def epoch(value: object) -> float | None:
    """A time as ECS gives it (ISO 8601 in events, datetime from boto3) in epoch seconds."""
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class TaskState:
    """One task as ECS describes it, in an event or in DescribeTasks's answer."""

    task_arn: str
    cluster_arn: str
    last_status: str
    environment: Mapping[str, str]
    stop: Stop
    version: int = 0

    @property
    def job(self) -> tuple[str, str, str, int] | None:
        """(bucket, key, job id, attempt) the runner started the task for; None if it did not."""
        env = self.environment
        attempt = _whole(env, "JOB_ATTEMPT")
        if not (env.get("S3_BUCKET") and env.get("S3_KEY") and env.get("JOB_ID")):
            return None
        if attempt is None:
            return None
        return env["S3_BUCKET"], env["S3_KEY"], env["JOB_ID"], attempt

    @property
    def claim(self) -> int | None:
        """The claim that started the task (JOB_CLAIM); None for a task started before the
        runner set it."""
        return _whole(self.environment, "JOB_CLAIM")


def _whole(environment: Mapping[str, str], name: str) -> int | None:
    """A variable's value as the runner wrote a number (ASCII digits); None otherwise."""
    value = environment.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


def task_state(detail: Mapping[str, Any], container_name: str) -> TaskState:
    """The task in an event's `detail` or a DescribeTasks entry (their fields are the same);
    MalformedEventError naming the field when one is not of the type ECS sends."""
    task_arn = detail.get("taskArn")
    if not isinstance(task_arn, str) or not task_arn:
        raise MalformedEventError("malformed task state change: detail.taskArn is missing")
    containers = _typed(detail, "containers", list, "a list of containers")
    ours = next(
        (c for c in containers or [] if _is_map(c) and c.get("name") == container_name),
        None,
    )
    first = (containers or [{}])[0]
    container: Mapping[str, Any] = ours or (first if _is_map(first) else {})
    overrides = _typed(detail, "overrides", Mapping, "an object") or {}
    environment: dict[str, str] = {}
    listed = _typed(overrides, "containerOverrides", list, "a list", "overrides.")
    for override in listed or []:
        if _is_map(override) and override.get("name") in (container_name, None):
            pairs = _typed(
                override, "environment", list, "a list of pairs", "overrides.containerOverrides[]."
            )
            environment |= {
                str(pair.get("name")): str(pair.get("value"))
                for pair in pairs or []
                if _is_map(pair)
            }
    exit_code = container.get("exitCode")
    version = detail.get("version")
    return TaskState(
        task_arn=task_arn,
        cluster_arn=_typed(detail, "clusterArn", str, "a string") or "",
        last_status=_typed(detail, "lastStatus", str, "a string") or "",
        environment=environment,
        stop=Stop(
            task_arn=task_arn,
            stop_code=_typed(detail, "stopCode", str, "a string"),
            stopped_reason=_typed(detail, "stoppedReason", str, "a string"),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            container_reason=_typed(container, "reason", str, "a string", "containers[]."),
            started_at=epoch(detail.get("startedAt")),
            stopped_at=epoch(detail.get("stoppedAt")),
            provider=_typed(detail, "capacityProviderName", str, "a string"),
        ),
        version=version if isinstance(version, int) else 0,
    )


def _is_map(value: object) -> bool:
    # JSON and boto3 give plain dicts: checked first, as the sweep parses a hundred tasks a
    # minute and an ABC's isinstance is four times slower.
    return type(value) is dict or isinstance(value, Mapping)


def _typed(
    fields: Mapping[str, Any], name: str, kind: type[Any], allowed: str, path: str = ""
) -> Any:
    """fields[name] if it is a `kind` (None when absent or null): a field of another type is
    not one ECS sent, and is named rather than left to fail deeper in."""
    value = fields.get(name)
    if value is None or type(value) is kind or isinstance(value, kind):
        return value
    raise MalformedEventError(
        f"malformed task state change: detail.{path}{name} must be {allowed},"
        f" not {type(value).__name__}"
    )


def record_stop(
    store: JobStore,
    settings: RunnerSettings,
    services: Services,
    job: Job,
    *,
    number: int,
    stop: Stop,
    claim: int | None = None,
) -> Job | None:
    """The attempt's task stopped: succeed, retry or fail the job; None if the record had moved
    on (a duplicate or late report of this stop)."""
    reporter = reports.Reporter(store, settings, services)
    for _ in range(3):  # the sweep or a fill may write the record between our read and write
        attempt = job.current
        if (
            attempt is None
            or attempt.number != number
            or (claim is not None and attempt.claim != claim)
            or not job.holds_slot
            or (attempt.task_arn is not None and attempt.task_arn != stop.task_arn)
        ):
            return None
        after = after_stop(stop, attempt, job.attempts_in_budget, settings.retry)
        try:
            written = store.apply(
                job, job_record.stopped(job, number, stop, after, now=services.clock())
            )
        except Conflict:
            fresh = store.reread(job)
            if fresh is None:
                return None
            job = fresh
            continue
        reporter.ended(written)
        if written.state == "succeeded":
            store.count(succeeded=1)
        elif written.state == "failed":
            store.count(failed=1)
            written = reporter.failure(written)
        logger.log(
            logging.ERROR if written.state == "failed" else logging.INFO,
            json.dumps(
                {
                    "job": written.location,
                    "attempt": number,
                    "taskArn": stop.task_arn,
                    "outcome": after.outcome,
                    "cause": after.cause,
                    "reason": after.reason,
                    "state": written.state,
                },
                ensure_ascii=False,
            ),
        )
        return written
    return None


def handle_task_event(
    event: Mapping[str, Any],
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> dict[str, str]:
    """Settle the job whose task stopped, then start the oldest waiting jobs into its slot."""
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEventError("malformed task state change: no detail object")
    state = task_state(detail, settings.container_name)
    ours = state.job
    if state.cluster_arn != settings.cluster_arn or ours is None:
        logger.info(
            json.dumps({"task": state.task_arn, "outcome": "ignored", "reason": "not ours"})
        )
        return {"outcome": "ignored"}
    if state.last_status != "STOPPED":
        return {"outcome": "ignored", "reason": f"lastStatus {state.last_status}"}
    store = services.job_store(settings)
    bucket, key, job_id, number = ours
    job = store.get(bucket, key, job_id)
    if job is None:
        logger.warning(
            json.dumps({"task": state.task_arn, "outcome": "ignored", "reason": "no job record"})
        )
        return {"outcome": "ignored", "reason": "no job record"}
    settled = record_stop(
        store, settings, services, job, number=number, stop=state.stop, claim=state.claim
    )
    report = Scheduler(store, settings, services, remaining_ms=remaining_ms).fill()
    return {
        "outcome": "settled" if settled is not None else "already settled",
        "state": settled.state if settled is not None else job.state,
        "started": str(len(report.started)),
    }
