"""The runner's settings, read once per container from the environment the infrastructure sets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from retry_policy import FIRST_RETRY_DELAY_SECONDS, MAX_RETRY_DELAY_SECONDS, RetryRules

AssignPublicIp = Literal["ENABLED", "DISABLED"]
CapacityProvider = Literal["FARGATE", "FARGATE_SPOT"]

ASSIGN_PUBLIC_IP_VALUES: tuple[AssignPublicIp, ...] = ("ENABLED", "DISABLED")
CAPACITY_PROVIDERS: tuple[CapacityProvider, ...] = ("FARGATE", "FARGATE_SPOT")
MAX_SUBNETS = 16  # awsvpcConfiguration limits
MAX_SECURITY_GROUPS = 5
MAX_CONCURRENT_TASKS = 100_000  # far above any account's Fargate quota; 0 means no cap
# An upload the job table could not take waits in the backlog queue: first retry after this
# long, doubling to the most. SQS delays a new message by at most 900 s.
FIRST_RETRY_SECONDS = 30
MAX_RETRY_SECONDS = 3600
FIRST_RETRY_BOUNDS = (1, 900)
# A received message stays hidden at most 12 h counted from its receipt, so SQS refuses a
# ChangeMessageVisibility asking for 12 h less what has passed since (SQS developer guide,
# "Visibility timeout"). The change comes after the batching window (10 s) and within the
# function's timeout (120 s), and never succeeds later than the backlog's visibility timeout
# (720 s, infra/runner.py), when the message is no longer in flight: 12 h less that is safe.
RECEIVED_MESSAGE_MAX_HIDDEN_SECONDS = 43_200
BACKLOG_VISIBILITY_TIMEOUT_SECONDS = 720
MAX_RETRY_BOUNDS = (1, RECEIVED_MESSAGE_MAX_HIDDEN_SECONDS - BACKLOG_VISIBILITY_TIMEOUT_SECONDS)
# Batch's limits for a job's attempts (retryStrategy.attempts: 1 to 10).
MAX_ATTEMPTS_BOUNDS = (1, 10)
DEFAULT_MAX_ATTEMPTS = 3
# How long a job may wait for a slot: from 10 minutes (Batch's least, for RUNNABLE jobs) to the
# 14 days the queues keep a failure for a redrive.
WAIT_TIMEOUT_BOUNDS = (600, 14 * 24 * 3600)
DEFAULT_WAIT_TIMEOUT_SECONDS = 14 * 24 * 3600
RECORD_DAYS_BOUNDS = (1, 3650)
DEFAULT_RECORD_DAYS = 30
TASK_TIMEOUT_BOUNDS = (0, 30 * 24 * 3600)  # 0: no limit
# A task's first retry waits this long, doubling to MAX_RETRY_DELAY_SECONDS (retry_policy).
RETRY_DELAY_BOUNDS = (1, int(MAX_RETRY_DELAY_SECONDS))

_CLUSTER_ARN = re.compile(r"arn:[a-z-]+:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255}")
_TASK_DEFINITION_ARN = re.compile(
    r"arn:[a-z-]+:ecs:[a-z0-9-]+:\d{12}:task-definition/[A-Za-z0-9_-]{1,255}(:\d+)?"
)
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SUBNET_ID = re.compile(r"subnet-[0-9a-f]+")
_SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-f]+")
# https://sqs.<region>.amazonaws.com/<account>/<name>, or an emulator's http://host:port/...
_QUEUE_URL = re.compile(r"https?://[^/\s]+/\d{12}/[A-Za-z0-9_-]{1,80}")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_LOG_GROUP = re.compile(r"[A-Za-z0-9_/.#-]{1,512}")
_EXIT_CODE = re.compile(r"\d{1,3}")


_Choice = TypeVar("_Choice", bound=str)


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid; the message names each."""


@dataclass(frozen=True)
class RunnerSettings:
    """Where and how the runner starts tasks, and what it does when they stop."""

    cluster_arn: str
    task_definition_arn: str
    container_name: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    assign_public_ip: AssignPublicIp
    capacity_provider: CapacityProvider
    result_prefix: str
    backlog_queue_url: str
    dead_letter_queue_url: str
    failed_jobs_queue_url: str
    state_table: str  # the job records, and the scheduler's slots
    max_concurrent_tasks: int = 0  # 0: only the account's own limits
    task_timeout_seconds: int | None = None  # None: no limit
    retry: RetryRules = field(default_factory=RetryRules)
    wait_timeout_seconds: int = DEFAULT_WAIT_TIMEOUT_SECONDS
    record_days: int = DEFAULT_RECORD_DAYS
    job_log_group: str | None = None  # where the job's logs go, for the log commands we print
    first_retry_seconds: int = FIRST_RETRY_SECONDS
    max_retry_seconds: int = MAX_RETRY_SECONDS


def load_settings(environ: Mapping[str, str]) -> RunnerSettings:
    """Validate every variable and report all problems at once, each with what is allowed."""
    problems: list[str] = []

    def matching(name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            problems.append(f"{name} is missing; set it to {allowed}")
        elif not pattern.fullmatch(value):
            problems.append(f"{name}={value!r} is invalid; allowed: {allowed}")
        return value

    def id_list(name: str, pattern: re.Pattern[str], allowed: str, limit: int) -> tuple[str, ...]:
        raw = environ.get(name, "")
        ids = tuple(part.strip() for part in raw.split(",") if part.strip())
        what = f"1 to {limit} comma-separated {allowed}"
        if not ids:
            problems.append(f"{name} is missing; set it to {what}")
        elif len(ids) > limit or not all(pattern.fullmatch(one) for one in ids):
            problems.append(f"{name}={raw!r} is invalid; allowed: {what}")
        return ids

    def number(name: str, bounds: tuple[int, int], default: int | None, why: str = "") -> int:
        found = _whole_number(environ, name, bounds, default, problems, why=why)
        return 0 if found is None else found

    def queue(name: str, what: str) -> str:
        return matching(
            name, _QUEUE_URL, f"the {what}'s URL (https://sqs.<region>.amazonaws.com/<account>/…)"
        )

    cluster_arn = matching(
        "CLUSTER_ARN", _CLUSTER_ARN, "an ECS cluster ARN (arn:aws:ecs:<region>:<account>:cluster/…)"
    )
    task_definition_arn = matching(
        "TASK_DEFINITION_ARN",
        _TASK_DEFINITION_ARN,
        "an ECS task definition ARN (arn:aws:ecs:<region>:<account>:task-definition/<family>:<n>)",
    )
    container_name = matching(
        "CONTAINER_NAME", _CONTAINER_NAME, "the container's name (letters, digits, '-', '_')"
    )
    subnets = id_list("SUBNETS", _SUBNET_ID, "subnet ids (subnet-…)", MAX_SUBNETS)
    security_groups = id_list(
        "SECURITY_GROUPS", _SECURITY_GROUP_ID, "security group ids (sg-…)", MAX_SECURITY_GROUPS
    )
    assign_public_ip = _choice(environ, "ASSIGN_PUBLIC_IP", ASSIGN_PUBLIC_IP_VALUES, problems)
    capacity_provider = _choice(environ, "CAPACITY_PROVIDER", CAPACITY_PROVIDERS, problems)
    result_prefix = environ.get("RESULT_PREFIX", "")
    if not result_prefix:
        problems.append(
            "RESULT_PREFIX is missing; set it to the non-empty key prefix the task writes "
            "results under (keys under it never start a task)"
        )
    backlog_queue_url = queue("BACKLOG_QUEUE_URL", "backlog queue")
    dead_letter_queue_url = queue("DEAD_LETTER_QUEUE_URL", "dead-letter queue")
    failed_jobs_queue_url = queue("FAILED_JOBS_QUEUE_URL", "failed-jobs queue")
    state_table = matching(
        "STATE_TABLE",
        _TABLE_NAME,
        "the DynamoDB table of job records (3-255 letters, digits, '_', '-', '.')",
    )
    max_concurrent_tasks = number("MAX_CONCURRENT_TASKS", (0, MAX_CONCURRENT_TASKS), None)
    task_timeout = number("TASK_TIMEOUT_SECONDS", TASK_TIMEOUT_BOUNDS, 0)
    retry = RetryRules(
        max_attempts=number("TASK_MAX_ATTEMPTS", MAX_ATTEMPTS_BOUNDS, DEFAULT_MAX_ATTEMPTS),
        retry_exit_codes=_exit_codes(environ, "TASK_RETRY_EXIT_CODES", problems),
        retry_timeouts=_flag(environ, "TASK_RETRY_TIMEOUTS", problems),
        spot_fallback=_flag(environ, "SPOT_FALLBACK_TO_FARGATE", problems),
        first_delay=number(
            "TASK_RETRY_DELAY_SECONDS", RETRY_DELAY_BOUNDS, int(FIRST_RETRY_DELAY_SECONDS)
        ),
    )
    wait_timeout = number("WAIT_TIMEOUT_SECONDS", WAIT_TIMEOUT_BOUNDS, DEFAULT_WAIT_TIMEOUT_SECONDS)
    record_days = number("JOB_RECORD_DAYS", RECORD_DAYS_BOUNDS, DEFAULT_RECORD_DAYS)
    job_log_group = environ.get("JOB_LOG_GROUP", "").strip() or None
    if job_log_group is not None and not _LOG_GROUP.fullmatch(job_log_group):
        problems.append(f"JOB_LOG_GROUP={job_log_group!r} is invalid; allowed: a log group name")
    first_retry = number("BACKLOG_FIRST_RETRY_SECONDS", FIRST_RETRY_BOUNDS, FIRST_RETRY_SECONDS)
    max_retry = number(
        "BACKLOG_MAX_RETRY_SECONDS",
        MAX_RETRY_BOUNDS,
        MAX_RETRY_SECONDS,
        why=(
            "SQS hides a received message at most 12 h from its receipt, and the change comes "
            f"up to {BACKLOG_VISIBILITY_TIMEOUT_SECONDS} s after it"
        ),
    )
    if first_retry and max_retry and max_retry < first_retry:
        problems.append(
            f"BACKLOG_MAX_RETRY_SECONDS={max_retry} is below BACKLOG_FIRST_RETRY_SECONDS="
            f"{first_retry}; the longest wait between retries must be at least the first"
        )
    if problems:
        raise SettingsError("runner settings: " + "; ".join(problems))
    # _choice appended a problem (and we raised) unless both values are valid members.
    assert assign_public_ip is not None
    assert capacity_provider is not None
    return RunnerSettings(
        cluster_arn=cluster_arn,
        task_definition_arn=task_definition_arn,
        container_name=container_name,
        subnets=subnets,
        security_groups=security_groups,
        assign_public_ip=assign_public_ip,
        capacity_provider=capacity_provider,
        result_prefix=result_prefix,
        backlog_queue_url=backlog_queue_url,
        dead_letter_queue_url=dead_letter_queue_url,
        failed_jobs_queue_url=failed_jobs_queue_url,
        state_table=state_table,
        max_concurrent_tasks=max_concurrent_tasks,
        task_timeout_seconds=task_timeout or None,
        retry=retry,
        wait_timeout_seconds=wait_timeout,
        record_days=record_days,
        job_log_group=job_log_group,
        first_retry_seconds=first_retry,
        max_retry_seconds=max_retry,
    )


def _choice(
    environ: Mapping[str, str], name: str, allowed: tuple[_Choice, ...], problems: list[str]
) -> _Choice | None:
    value = environ.get(name, "").strip()
    for member in allowed:
        if value == member:
            return member
    choices = " or ".join(allowed)
    if not value:
        problems.append(f"{name} is missing; set it to {choices}")
    else:
        problems.append(f"{name}={value!r} is invalid; allowed: {choices}")
    return None


def _whole_number(
    environ: Mapping[str, str],
    name: str,
    bounds: tuple[int, int],
    default: int | None,
    problems: list[str],
    *,
    why: str = "",
) -> int | None:
    """A whole number within `bounds`; `default` when unset (None: the variable is required).
    `why` says where the bounds come from, when that is not obvious."""
    value = environ.get(name, "").strip()
    low, high = bounds
    allowed = f"a whole number from {low} to {high}" + (f" ({why})" if why else "")
    if not value:
        if default is None:
            problems.append(f"{name} is missing; set it to {allowed}")
        return default
    # isascii: str.isdigit accepts digits such as "²" that int() rejects.
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        problems.append(f"{name}={value!r} is invalid; allowed: {allowed}")
        return None
    return int(value)


def _flag(environ: Mapping[str, str], name: str, problems: list[str]) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    problems.append(f"{name}={environ[name]!r} is invalid; allowed: true or false")
    return False


def _exit_codes(environ: Mapping[str, str], name: str, problems: list[str]) -> frozenset[int]:
    raw = environ.get(name, "")
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not all(_EXIT_CODE.fullmatch(part) and 1 <= int(part) <= 255 for part in parts):
        problems.append(
            f"{name}={raw!r} is invalid; allowed: comma-separated exit codes from 1 to 255"
        )
        return frozenset()
    return frozenset(int(part) for part in parts)
