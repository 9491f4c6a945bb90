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

_CLUSTER_ARN = re.compile(r"arn:[a-z-]+:ecs:[a-z0-9-]+:\d{12}:cluster/[A-Za-z0-9_-]{1,255}")
_TASK_DEFINITION_ARN = re.compile(
    r"arn:[a-z-]+:ecs:[a-z0-9-]+:\d{12}:task-definition/[A-Za-z0-9_-]{1,255}(:\d+)?"
)
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SUBNET_ID = re.compile(r"subnet-[0-9a-f]+")
_SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-f]+")


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
