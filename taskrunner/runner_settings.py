"""The runner's settings, read once per container from the environment the infrastructure sets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

AssignPublicIp = Literal["ENABLED", "DISABLED"]
CapacityProvider = Literal["FARGATE", "FARGATE_SPOT"]

ASSIGN_PUBLIC_IP_VALUES: tuple[AssignPublicIp, ...] = ("ENABLED", "DISABLED")
CAPACITY_PROVIDERS: tuple[CapacityProvider, ...] = ("FARGATE", "FARGATE_SPOT")
MAX_SUBNETS = 16  # awsvpcConfiguration limits
MAX_SECURITY_GROUPS = 5
MAX_CONCURRENT_TASKS = 100_000  # far above any account's Fargate quota; 0 means no cap
# How long a parked upload waits before its first retry, and the most it waits between two:
# the delay doubles from the first to the second. SQS delays a new message by at most 900 s.
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


_Choice = TypeVar("_Choice", bound=str)


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid; the message names each."""


@dataclass(frozen=True)
class RunnerSettings:
    """Where and how the runner starts tasks."""

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
    max_concurrent_tasks: int = 0  # 0: only the account's own limits
    state_table: str | None = None  # the cap's lock and started-upload ledger (with a cap)
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
    backlog_queue_url = matching(
        "BACKLOG_QUEUE_URL",
        _QUEUE_URL,
        "the backlog queue's URL (https://sqs.<region>.amazonaws.com/<account>/<name>)",
    )
    dead_letter_queue_url = matching(
        "DEAD_LETTER_QUEUE_URL",
        _QUEUE_URL,
        "the dead-letter queue's URL (https://sqs.<region>.amazonaws.com/<account>/<name>)",
    )
    max_concurrent_tasks = _whole_number(
        environ, "MAX_CONCURRENT_TASKS", (0, MAX_CONCURRENT_TASKS), None, problems
    )
    state_table = environ.get("STATE_TABLE", "").strip() or None
    if max_concurrent_tasks and state_table is None:
        problems.append(
            "STATE_TABLE is missing; with MAX_CONCURRENT_TASKS above 0 set it to the DynamoDB "
            "table that holds the cap's lock"
        )
    elif state_table is not None and not _TABLE_NAME.fullmatch(state_table):
        problems.append(
            f"STATE_TABLE={state_table!r} is invalid; allowed: a DynamoDB table name "
            "(3-255 letters, digits, '_', '-', '.')"
        )
    first_retry = _whole_number(
        environ, "BACKLOG_FIRST_RETRY_SECONDS", FIRST_RETRY_BOUNDS, FIRST_RETRY_SECONDS, problems
    )
    max_retry = _whole_number(
        environ,
        "BACKLOG_MAX_RETRY_SECONDS",
        MAX_RETRY_BOUNDS,
        MAX_RETRY_SECONDS,
        problems,
        why=(
            "SQS hides a received message at most 12 h from its receipt, and the change comes "
            f"up to {BACKLOG_VISIBILITY_TIMEOUT_SECONDS} s after it"
        ),
    )
    if first_retry is not None and max_retry is not None and max_retry < first_retry:
        problems.append(
            f"BACKLOG_MAX_RETRY_SECONDS={max_retry} is below BACKLOG_FIRST_RETRY_SECONDS="
            f"{first_retry}; the longest wait between retries must be at least the first"
        )
    if problems:
        raise SettingsError("runner settings: " + "; ".join(problems))
    # _choice appended a problem (and we raised) unless both values are valid members.
    assert assign_public_ip is not None
    assert capacity_provider is not None
    assert max_concurrent_tasks is not None
    assert first_retry is not None
    assert max_retry is not None
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
        max_concurrent_tasks=max_concurrent_tasks,
        state_table=state_table,
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
