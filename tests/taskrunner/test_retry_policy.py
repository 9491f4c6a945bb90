"""Retries by cause: how a stop is read and what follows it. Pure."""

from __future__ import annotations

import pytest
from job_record import Attempt, Stop
from retry_policy import TIMEOUT_REASON, RetryRules, after_stop, cause_of

ARN = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123456789abcdef"
ATTEMPT = Attempt(number=1, claim=1, provider="FARGATE_SPOT", claimed_at=0.0, task_arn=ARN)


def stop(
    code: str | None,
    reason: str | None = None,
    exit_code: int | None = None,
    container_reason: str | None = None,
    started_at: float | None = 10.0,
) -> Stop:
    return Stop(ARN, code, reason, exit_code, container_reason, started_at, 100.0)


@pytest.mark.parametrize(
    ("given", "cause"),
    [
        (stop("EssentialContainerExited", "Essential container in task exited", 0), "succeeded"),
        (stop("EssentialContainerExited", "Essential container in task exited", 1), "job-failure"),
        (stop("EssentialContainerExited", None, 137, "OutOfMemoryError: killed"), "out-of-memory"),
        (stop("EssentialContainerExited", None, 8), "timeout"),
        (stop("SpotInterruption", "Your Spot Task was interrupted.", 143), "spot-interruption"),
        (
            stop("TaskFailedToStart", "CannotPullContainerError: i/o timeout", None, None, None),
            "image-pull",
        ),
        (
            stop("TaskFailedToStart", "ResourceInitializationError: unable to pull secrets"),
            "failed-to-start",
        ),
        (stop("TaskFailedToStart", "Capacity is unavailable at this time."), "capacity"),
        (stop("TerminationNotice", "Task stopped due to infrastructure maintenance"), "host"),
        (stop("UserInitiated", "Task stopped by user", 143), "stopped"),
        (stop("UserInitiated", f"{TIMEOUT_REASON} (15 min)", 143), "timeout"),
        (stop(None, "Host EC2 (instance i-0123) terminated."), "host"),
        (stop("TaskNotFound", "ECS no longer knows the task"), "lost"),
    ],
)
def test_a_stop_is_read_by_its_stop_code_reason_and_exit_code(given: Stop, cause: str) -> None:
    assert cause_of(given, ATTEMPT) == cause


def test_a_task_the_sweep_stopped_for_its_time_limit_is_a_timeout_whatever_it_exited_with() -> None:
    asked = Attempt(1, 1, "FARGATE", 0.0, task_arn=ARN, stop_requested="timeout")
    assert cause_of(stop("UserInitiated", "Task stopped by user", 137), asked) == "timeout"
    assert cause_of(stop("SpotInterruption", None, 143), asked) == "timeout"


@pytest.mark.parametrize(
    "given",
    [
        stop("SpotInterruption", "Your Spot Task was interrupted.", 143),
        stop("TaskFailedToStart", "CannotPullContainerError: i/o timeout", started_at=None),
        stop("TerminationNotice", "maintenance"),
        stop("TaskNotFound", "ECS no longer knows the task"),  # started, then vanished unseen
    ],
)
def test_infrastructure_stops_are_retried_until_the_attempts_are_spent(given: Stop) -> None:
    rules = RetryRules(max_attempts=3)
    first = after_stop(given, ATTEMPT, 1, rules)
    second = after_stop(given, ATTEMPT, 2, rules)
    last = after_stop(given, ATTEMPT, 3, rules)
    assert (first.outcome, second.outcome, last.outcome) == ("retry", "retry", "failed")
    assert first.delay < second.delay
    assert "attempt 3 of 3" in last.reason


def test_a_job_failure_is_not_retried_unless_its_exit_code_is_listed() -> None:
    failure = stop("EssentialContainerExited", "Essential container in task exited", 3)
    assert after_stop(failure, ATTEMPT, 1, RetryRules()).outcome == "failed"
    listed = RetryRules(retry_exit_codes=frozenset({3, 75}))
    assert after_stop(failure, ATTEMPT, 1, listed).outcome == "retry"
    other = stop("EssentialContainerExited", None, 4)
    assert after_stop(other, ATTEMPT, 1, listed).outcome == "failed"


def test_a_timeout_is_retried_only_when_timeouts_are_to_be_retried() -> None:
    timed_out = stop("UserInitiated", f"{TIMEOUT_REASON} (15 min)", 143)
    assert after_stop(timed_out, ATTEMPT, 1, RetryRules()).outcome == "failed"
    assert after_stop(timed_out, ATTEMPT, 1, RetryRules(retry_timeouts=True)).outcome == "retry"


def test_a_person_stopping_a_task_is_not_retried() -> None:
    assert (
        after_stop(
            stop("UserInitiated", "Task stopped by user", 143), ATTEMPT, 1, RetryRules()
        ).outcome
        == "failed"
    )


def test_after_a_spot_interruption_the_next_attempt_runs_on_demand_when_asked() -> None:
    interrupted = stop("SpotInterruption", "Your Spot Task was interrupted.", 143)
    assert after_stop(interrupted, ATTEMPT, 1, RetryRules()).provider is None
    assert after_stop(interrupted, ATTEMPT, 1, RetryRules(spot_fallback=True)).provider == "FARGATE"
    pull = stop("TaskFailedToStart", "CannotPullContainerError", started_at=None)
    assert after_stop(pull, ATTEMPT, 1, RetryRules(spot_fallback=True)).provider is None


def test_success_needs_exit_code_0_and_names_no_retry() -> None:
    done = after_stop(stop("EssentialContainerExited", None, 0), ATTEMPT, 1, RetryRules())
    assert (done.outcome, done.cause) == ("succeeded", "succeeded")


def test_the_reason_says_the_cause_the_stop_code_the_reason_and_the_exit_code() -> None:
    failed = after_stop(
        stop("EssentialContainerExited", "Essential container in task exited", 2),
        ATTEMPT,
        1,
        RetryRules(),
    )
    assert (
        failed.reason
        == "job-failure: EssentialContainerExited; Essential container in task exited; exit code 2"
    )
