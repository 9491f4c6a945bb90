"""How a stopped task is read, and what follows it: the retry rules, by cause. Pure.

ECS says why a task stopped in its stop code, its stopped reason and the container's exit code
(ECS developer guide, "Amazon ECS stopped tasks errors"). Causes that are the infrastructure's,
not the job's, pass: a Spot interruption, a failure to start (an image pull that failed on a
network blip, ResourceInitializationError), a host taken away. They are retried, up to the
attempt limit, after a short delay that doubles. A job that exits non-zero fails, unless its
exit code is listed as worth retrying (as AWS Batch's `evaluateOnExit` lists them). A task the
sweep stopped for running too long is a timeout, whatever its exit code (143 after SIGTERM is
not an interruption); so is exit code 8, the job's own time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from job_record import Attempt, Next, Stop

# The reason StopTask is given when a task outlives taskTimeoutMinutes; ECS shows it as the
# task's stoppedReason, so a person reading the console sees who stopped it and why.
TIMEOUT_REASON = "s3-fargate-jobs: ran longer than taskTimeoutMinutes"
JOB_TIMEOUT_EXIT = 8  # task/exit_codes.py: the job stopped itself at its time limit
SUCCESS_STOP = "EssentialContainerExited"
# Not ECS's: the stop code the sweep gives an attempt whose task ECS no longer knows, with no
# stop seen. Its outcome is lost, so it is retried like an infrastructure failure.
LOST_STOP = "TaskNotFound"
FIRST_RETRY_DELAY_SECONDS = 30.0
MAX_RETRY_DELAY_SECONDS = 600.0
ON_DEMAND = "FARGATE"

_IMAGE_PULL = re.compile(r"CannotPullContainer|pull image|ImagePull", re.IGNORECASE)
_CAPACITY = re.compile(r"capacity is unavailable|insufficient capacity", re.IGNORECASE)
_HOST = re.compile(r"host|infrastructure|underlying", re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(r"OutOfMemory", re.IGNORECASE)

# Causes that are the infrastructure's: retried while attempts are left.
INFRASTRUCTURE_CAUSES = frozenset(
    {"spot-interruption", "failed-to-start", "image-pull", "capacity", "host", "lost"}
)
CAUSES = (
    "succeeded",
    "spot-interruption",
    "failed-to-start",
    "image-pull",
    "capacity",
    "host",
    "timeout",
    "job-failure",
    "out-of-memory",
    "stopped",
    "lost",
)


@dataclass(frozen=True)
class RetryRules:
    """The stack's retry settings (config: taskMaxAttempts, taskRetryExitCodes, ...)."""

    max_attempts: int = 3
    retry_exit_codes: frozenset[int] = field(default_factory=frozenset)
    retry_timeouts: bool = False
    spot_fallback: bool = False  # after a Spot interruption, the next attempt on FARGATE
    first_delay: float = FIRST_RETRY_DELAY_SECONDS


def cause_of(stop: Stop, attempt: Attempt) -> str:
    """One word for why the task stopped."""
    if attempt.stop_requested == "timeout" or (stop.stopped_reason or "").startswith(
        TIMEOUT_REASON
    ):
        return "timeout"
    by_code = _cause_from_stop_code(stop)
    if by_code is not None:
        return by_code
    if stop.stop_code == SUCCESS_STOP or stop.exit_code is not None:
        return _cause_from_exit(stop)
    if _HOST.search(stop.stopped_reason or ""):
        return "host"
    return "failed-to-start" if stop.started_at is None else "job-failure"


def _cause_from_stop_code(stop: Stop) -> str | None:
    """Causes ECS names in the stop code itself; None for an exit or an unknown code."""
    reason = stop.stopped_reason or ""
    if stop.stop_code == "TaskFailedToStart":
        if _IMAGE_PULL.search(reason):
            return "image-pull"
        if _CAPACITY.search(reason):
            return "capacity"
        return "failed-to-start"
    return {
        "SpotInterruption": "spot-interruption",
        "TerminationNotice": "host",
        "ServiceSchedulerInitiated": "host",
        "UserInitiated": "stopped",
        LOST_STOP: "lost",
    }.get(stop.stop_code or "")


def _cause_from_exit(stop: Stop) -> str:
    if stop.exit_code == 0:
        return "succeeded"
    if stop.exit_code == JOB_TIMEOUT_EXIT:
        return "timeout"
    if _OUT_OF_MEMORY.search(stop.container_reason or ""):
        return "out-of-memory"
    return "job-failure"


def describe(stop: Stop, cause: str) -> str:
    """The stop in words, for the record, the failed-jobs queue and `jobctl show`."""
    parts = [f"{cause}: {stop.stop_code or 'no stop code'}"]
    if stop.stopped_reason:
        parts.append(stop.stopped_reason)
    if stop.exit_code is not None:
        parts.append(f"exit code {stop.exit_code}")
    if stop.container_reason:
        parts.append(stop.container_reason)
    return "; ".join(parts)


def retry_delay(retries_so_far: int, rules: RetryRules) -> float:
    """Seconds before retry number `retries_so_far` + 1: doubling from the first, capped."""
    return float(min(MAX_RETRY_DELAY_SECONDS, rules.first_delay * 2 ** min(retries_so_far, 20)))


def after_stop(stop: Stop, attempt: Attempt, attempts_used: int, rules: RetryRules) -> Next:
    """What follows this stopped attempt. `attempts_used` counts it (since the last redrive)."""
    cause = cause_of(stop, attempt)
    reason = describe(stop, cause)
    if cause == "succeeded":
        return Next("succeeded", cause, reason)
    retryable = (
        cause in INFRASTRUCTURE_CAUSES
        or (cause == "timeout" and rules.retry_timeouts)
        or (
            cause in ("job-failure", "out-of-memory")
            and stop.exit_code is not None
            and stop.exit_code in rules.retry_exit_codes
        )
    )
    if not retryable:
        return Next("failed", cause, reason)
    if attempts_used >= rules.max_attempts:
        return Next(
            "failed",
            cause,
            f"{reason} (attempt {attempts_used} of {rules.max_attempts}: no attempt left)",
        )
    provider = ON_DEMAND if cause == "spot-interruption" and rules.spot_fallback else None
    return Next(
        "retry",
        cause,
        reason,
        delay=retry_delay(attempts_used - 1, rules),
        provider=provider,
    )
