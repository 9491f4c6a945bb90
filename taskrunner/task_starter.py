"""One attempt of a job as one RunTask call, and ECS's answer sorted by what it means.

`build_run_task_request` is pure; `run_task` makes the call (botocore retries inside it) and
says which of these it was: started (the task's ARN), not now (capacity, a first throttle, the
account's quota: the job waits again), lost (no answer, or one that does not prove ECS started
nothing: the task may be running; a retry with the same clientToken finds out), or rejected
(access, a parameter ECS refuses: waiting cannot mend it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError
from job_record import Attempt, Job
from runner_settings import RunnerSettings

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient
    from mypy_boto3_ecs.type_defs import KeyValuePairTypeDef, RunTaskRequestTypeDef

# One value for every task this system starts, so ListTasks(startedBy=...) finds them all;
# within the 36 characters (letters, digits, "-", "_", "/") ECS allows.
STARTED_BY = "s3-upload"
# Answers that say "not now" come as a RunTask `failures` entry or as an error (REFERENCE.md).
# At the account's vCPU or task quota the job waits for a slot; a capacity shortage passes.
QUOTA_MESSAGE = re.compile(r"reached the limit on the number", re.IGNORECASE)
CAPACITY_MESSAGE = re.compile(
    r"RESOURCE:|capacity is unavailable|insufficient capacity", re.IGNORECASE
)
# Errors botocore retries and that outlast its attempts only under load. Throttling turns a
# request away before ECS acts on it: at the first attempt it is a "not now". But botocore
# also retries timeouts, so a throttled retry may follow an attempt that started the task;
# and a server error may come after the task was started. Both are answers lost: the claim
# keeps its clientToken, and the sweep asks again with it.
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
SERVER_ERROR_CODES = frozenset(
    {"ServiceUnavailable", "ServiceUnavailableException", "ServerException", "InternalFailure"}
)

Answer = Literal["started", "quota", "not-now", "lost", "rejected"]


@dataclass(frozen=True)
class StartAnswer:
    """What ECS said to one RunTask: `task_arn` when started, `reason` otherwise."""

    answer: Answer
    task_arn: str | None = None
    reason: str = ""

    @property
    def waits(self) -> bool:
        """The job waits again: ECS started nothing and may start it later."""
        return self.answer in ("quota", "not-now")


def client_token(job: Job, attempt: Attempt) -> str:
    """RunTask's clientToken for one claim of one job: 64 hex characters (ECS allows 33-126).

    The same claim gets the same token however often it is retried (a lost answer, a sweep
    finishing what an invocation began), so ECS starts at most one task for it; a new claim,
    a new token.
    """
    material = json.dumps([job.bucket, job.key, job.job_id, attempt.claim])  # ASCII: \u-escaped
    return hashlib.sha256(material.encode("ascii")).hexdigest()


def build_run_task_request(
    job: Job, attempt: Attempt, settings: RunnerSettings
) -> RunTaskRequestTypeDef:
    """The RunTask parameters that start this attempt of the job."""
    environment: list[KeyValuePairTypeDef] = [
        {"name": "S3_BUCKET", "value": job.bucket},
        {"name": "S3_KEY", "value": job.key},
    ]
    if job.version_id:
        environment.append({"name": "S3_VERSION_ID", "value": job.version_id})
    # Which record and attempt the task is: its state-change events name it back to the runner.
    environment += [
        {"name": "JOB_ID", "value": job.job_id},
        {"name": "JOB_ATTEMPT", "value": str(attempt.number)},
        # The claim, too: an attempt ECS turned away is claimed again under the same number,
        # and a stop must settle only the claim that started its task.
        {"name": "JOB_CLAIM", "value": str(attempt.claim)},
    ]
    return {
        "cluster": settings.cluster_arn,
        "taskDefinition": settings.task_definition_arn,
        "count": 1,
        # Never together with launchType: ECS rejects requests carrying both.
        "capacityProviderStrategy": [{"capacityProvider": attempt.provider, "weight": 1}],
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
        "clientToken": client_token(job, attempt),
    }


def run_task(ecs: ECSClient, request: RunTaskRequestTypeDef) -> StartAnswer:
    """One RunTask call; every answer becomes a StartAnswer."""
    try:
        answer = ecs.run_task(**request)
    except ClientError as error:
        return _error_answer(error)
    except BotoCoreError as error:
        # Timeouts and connection errors, once botocore's retries are spent. ECS may have
        # started the task all the same; the retry's clientToken finds it.
        return StartAnswer("lost", reason=f"{type(error).__name__}: {error}")
    failures = answer.get("failures") or []
    if failures:
        reasons = "; ".join(
            f"{failure.get('reason', 'unknown reason')}"
            + (f" ({failure['detail']})" if failure.get("detail") else "")
            for failure in failures
        )
        return _not_now(f"RunTask failures: {reasons}", reasons)
    tasks = answer.get("tasks") or []
    if not tasks or "taskArn" not in tasks[0]:
        return StartAnswer("not-now", reason="RunTask answered with no task and no failure")
    return StartAnswer("started", task_arn=tasks[0]["taskArn"])


def _error_answer(error: ClientError) -> StartAnswer:
    response = error.response
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    if code == "ConflictException":
        # The token already started a task with other parameters (a deployment changed the
        # task definition in between): that task is this attempt's.
        # botocore puts the modelled members of an error (here resourceIds) at the top level.
        existing = response.get("resourceIds")
        if isinstance(existing, list) and existing and isinstance(existing[0], str):
            return StartAnswer("started", task_arn=existing[0])
        return StartAnswer("lost", reason=f"ConflictException naming no task: {message}")
    attempts = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    reason = f"{code}: {message} (after {attempts + 1} attempts)"
    if code in SERVER_ERROR_CODES or status >= 500 or (code in THROTTLING_CODES and attempts):
        return StartAnswer(
            "lost", reason=f"{reason}: an attempt may have started it; asked again with its token"
        )
    if code in THROTTLING_CODES:
        return StartAnswer("not-now", reason=reason)
    return _not_now(reason, message)


def _not_now(reason: str, said: str) -> StartAnswer:
    """`quota` or `not-now` when ECS said "not now" in `said`, `rejected` when it said anything
    else. Either way ECS handled the request: it started no task for this token."""
    if QUOTA_MESSAGE.search(said):
        return StartAnswer("quota", reason=reason)
    if CAPACITY_MESSAGE.search(said):
        return StartAnswer("not-now", reason=reason)
    return StartAnswer("rejected", reason=reason)
