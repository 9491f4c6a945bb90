"""Plan and start one Fargate task per upload.

`build_run_task_request` is pure; `start_task` makes one RunTask call and sorts its answer into
started, waiting (capacity, throttling, a lost answer: it can succeed later) or failed (it
cannot: access, a parameter ECS rejects); `start_uploads` starts a list of uploads, within the
task cap when there is one, one RunTask per distinct upload.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from outcomes import RecordResult
from runner_settings import RunnerSettings
from services import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, Services
from task_cap import TaskCap, upload_key
from upload_events import Upload, client_token

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient
    from mypy_boto3_ecs.type_defs import KeyValuePairTypeDef, RunTaskRequestTypeDef

# One value for every upload-started task, so ListTasks(startedBy=...) finds them all; within
# the 36 characters (letters, digits, "-", "_", "/") the issue allows.
STARTED_BY = "s3-upload"
# Not starting a record with less time left than this turns a Lambda timeout (which names no
# key) into a record that waits in the backlog and is tried again.
RECORD_TIME_RESERVE_MS = 2 * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) * 1000
# Answers that say "not now" come as a RunTask `failures` entry or as an error (REFERENCE.md);
# either way the upload waits. At the account's vCPU or task quota it waits its turn; a
# capacity shortage passes.
QUOTA_MESSAGE = re.compile(r"reached the limit on the number", re.IGNORECASE)
CAPACITY_MESSAGE = re.compile(
    r"RESOURCE:|capacity is unavailable|insufficient capacity", re.IGNORECASE
)
# Errors botocore retries and that outlast its attempts only under load: the upload waits.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServerException",
        "InternalFailure",
    }
)


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
        return _error_result(error, upload)
    except BotoCoreError as error:
        # Timeouts and connection errors, once botocore's retries are spent. ECS may have
        # started the task all the same; the retry's clientToken finds it.
        return RecordResult(
            "waiting", upload, reason=f"{type(error).__name__}: {error}", maybe_started=True
        )
    failures = answer.get("failures") or []
    if failures:
        reasons = "; ".join(
            f"{failure.get('reason', 'unknown reason')}"
            + (f" ({failure['detail']})" if failure.get("detail") else "")
            for failure in failures
        )
        return _not_now(upload, f"RunTask failures: {reasons}", reasons)
    tasks = answer.get("tasks") or []
    if not tasks or "taskArn" not in tasks[0]:
        return RecordResult(
            "waiting", upload, reason="RunTask answered with no task and no failure"
        )
    return RecordResult("started", upload, task_arn=tasks[0]["taskArn"])


def _error_result(error: ClientError, upload: Upload) -> RecordResult:
    response = error.response
    code = response.get("Error", {}).get("Code", "")
    message = response.get("Error", {}).get("Message", "")
    if code == "ConflictException":
        # The same clientToken already started a task (with other parameters, e.g. before a
        # deployment changed the task definition): this upload has its task.
        # botocore puts the modelled members of an error (here resourceIds) at the top level.
        existing = response.get("resourceIds")
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
    attempts = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    reason = f"{code}: {message} (after {attempts + 1} attempts)"
    if code in THROTTLING_CODES or status >= 500:
        return RecordResult("waiting", upload, reason=reason)
    return _not_now(upload, reason, message)


def _not_now(upload: Upload, reason: str, said: str) -> RecordResult:
    """`waiting` when ECS said "not now" in `said`, `failed` when it said anything else. Either
    way ECS handled the request, clientToken included: it started no task for this upload."""
    if QUOTA_MESSAGE.search(said):
        return RecordResult("waiting", upload, reason=reason, full=True, no_task=True)
    if CAPACITY_MESSAGE.search(said):
        return RecordResult("waiting", upload, reason=reason, no_task=True)
    return RecordResult("failed", upload, reason=reason, no_task=True)


def start_uploads(
    uploads: list[Upload],
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> list[RecordResult]:
    """One result per upload, in order; one RunTask per distinct upload (a repeat shares it).

    With a cap, only as many start as fit and the rest are `waiting`. Nothing is started with
    too little of the invocation's time left: such an upload waits too.
    """

    def start_one(upload: Upload) -> RecordResult:
        if remaining_ms is not None and remaining_ms() < RECORD_TIME_RESERVE_MS:
            return RecordResult(
                "waiting",
                upload,
                reason=f"not tried: under {RECORD_TIME_RESERVE_MS // 1000} s left in this "
                "invocation",
            )
        return start_task(services.ecs, upload, settings)

    keys = [upload_key(upload) for upload in uploads]
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    distinct = [uploads[index] for index in first.values()]
    if settings.max_concurrent_tasks:
        started = TaskCap(settings, services).start(distinct, list(first), start_one, remaining_ms)
    else:
        started = []
        blocked: RecordResult | None = None
        for upload in distinct:
            if blocked is not None:
                started.append(
                    RecordResult(
                        "waiting", upload, reason=f"not tried: {blocked.reason}", full=blocked.full
                    )
                )
                continue
            result = start_one(upload)
            # ECS's "not now" (capacity, quota, throttling) holds for the whole account: the
            # rest of a batch waits with it instead of asking again.
            if result.outcome == "waiting" and not result.maybe_started:
                blocked = result
            started.append(result)
    by_key = dict(zip(first, started, strict=True))
    return [
        by_key[key]
        if first[key] == index
        else replace(by_key[key], upload=uploads[index], reason="repeated in this event")
        for index, key in enumerate(keys)
    ]
