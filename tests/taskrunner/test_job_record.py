"""The job record's transitions: what each event does to a job, and what it refuses. Pure."""

from __future__ import annotations

import dataclasses

import pytest
from job_record import (
    KEPT_ATTEMPTS,
    Attempt,
    Job,
    Next,
    Stop,
    TransitionError,
    claim,
    due,
    failed,
    from_fields,
    new_job,
    not_started,
    redriven,
    replace,
    reported,
    running,
    slot_change,
    stop_requested,
    stopped,
    task_started,
    written_over,
)

ARN = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123456789abcdef"


def waiting(now: float = 100.0) -> Job:
    return new_job(bucket="uploads", key="a.csv", job_id="0" * 32, now=now, version_id="v1")


def stop(exit_code: int | None = 0, code: str = "EssentialContainerExited") -> Stop:
    return Stop(ARN, code, "Essential container in task exited", exit_code, None, 110.0, 150.0)


def test_a_new_job_waits_from_the_moment_it_is_recorded() -> None:
    job = waiting(now=100.0)
    assert (job.state, job.ready_at, job.attempt_count, job.holds_slot) == (
        "waiting",
        100.0,
        0,
        False,
    )


def test_a_claim_takes_a_slot_for_a_new_attempt_on_the_default_provider() -> None:
    job = claim(waiting(), now=105.0, default_provider="FARGATE_SPOT")
    assert job.state == "starting"
    assert job.holds_slot
    assert job.current is not None
    assert (job.current.number, job.current.claim, job.current.provider) == (1, 1, "FARGATE_SPOT")
    assert slot_change(waiting(), job) == 1


def test_a_job_that_is_not_waiting_cannot_be_claimed_twice() -> None:
    job = claim(waiting(), now=105.0, default_provider="FARGATE")
    with pytest.raises(TransitionError, match="not waiting"):
        claim(job, now=106.0, default_provider="FARGATE")


def test_an_attempt_ecs_did_not_start_goes_back_to_its_place_with_a_fresh_token_next_time() -> None:
    first = claim(waiting(now=100.0), now=105.0, default_provider="FARGATE")
    back = not_started(first, 1, now=106.0, reason="capacity is unavailable")
    assert (back.state, back.ready_at, back.attempt_count, back.attempts) == (
        "waiting",
        100.0,
        0,
        (),
    )
    again = claim(back, now=107.0, default_provider="FARGATE")
    assert again.current is not None
    assert (again.current.number, again.current.claim) == (1, 2)  # same attempt, new claim
    assert slot_change(first, back) == -1


def test_a_task_that_exited_0_makes_the_job_succeed_and_frees_its_slot() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    done = stopped(job, 1, stop(0), Next("succeeded", "succeeded", "ok"), now=151.0)
    assert (done.state, done.finished_at, done.active_since) == ("succeeded", 151.0, None)
    assert done.current is not None
    assert (done.current.exit_code, done.current.cause, done.current.task_arn) == (
        0,
        "succeeded",
        ARN,
    )
    assert slot_change(job, done) == -1


def test_a_retry_waits_out_its_delay_in_its_place_and_keeps_the_stopped_attempt() -> None:
    first = waiting()
    job = task_started(claim(first, now=105.0, default_provider="FARGATE_SPOT"), 1, ARN)
    retry = Next("retry", "spot-interruption", "interrupted", delay=30.0, provider="FARGATE")
    again = stopped(job, 1, stop(143, "SpotInterruption"), retry, now=151.0)
    assert (again.state, again.ready_at, again.retry_at, again.next_provider) == (
        "waiting",
        first.ready_at,
        181.0,
        "FARGATE",
    )
    assert [a.cause for a in again.attempts] == ["spot-interruption"]
    with pytest.raises(TransitionError, match="delay"):
        claim(again, now=180.0, default_provider="FARGATE_SPOT")
    with pytest.raises(TransitionError, match="no retry due"):
        due(again, now=180.0)
    second = claim(due(again, now=181.0), now=200.0, default_provider="FARGATE_SPOT")
    assert second.current is not None
    assert (second.current.number, second.current.provider) == (2, "FARGATE")


def test_a_failed_job_is_left_unreported_until_its_report_is_sent() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    ended = stopped(job, 1, stop(1), Next("failed", "job-failure", "exit code 1"), now=151.0)
    assert (ended.state, ended.reported, ended.reason, ended.needs_sweep) == (
        "failed",
        False,
        "exit code 1",
        True,
    )
    done = reported(ended)
    assert (done.reported, done.needs_sweep) == (True, False)


def test_a_late_or_duplicate_stop_of_an_attempt_already_over_changes_nothing() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    done = stopped(job, 1, stop(0), Next("succeeded", "succeeded", "ok"), now=151.0)
    with pytest.raises(TransitionError):
        stopped(done, 1, stop(0), Next("succeeded", "succeeded", "ok"), now=152.0)
    with pytest.raises(TransitionError):
        running(done, 1, started_at=110.0, task_arn=ARN)


def test_a_stop_of_another_attempt_than_the_current_one_is_refused() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    with pytest.raises(TransitionError, match="attempt 2"):
        stopped(job, 2, stop(0), Next("succeeded", "succeeded", "ok"), now=151.0)


def test_running_and_a_timeout_request_are_noted_on_the_current_attempt() -> None:
    job = claim(waiting(), now=105.0, default_provider="FARGATE")
    seen = running(job, 1, started_at=110.0, task_arn=ARN)
    asked = stop_requested(seen, 1, "timeout")
    assert asked.state == "running"
    assert asked.current is not None
    assert (asked.current.started_at, asked.current.task_arn) == (110.0, ARN)
    assert asked.current.stop_requested == "timeout"
    assert running(asked, 1, started_at=110.0, task_arn=ARN) is asked  # nothing new: no write


def test_a_job_ecs_refuses_fails_without_an_attempt_that_never_ran() -> None:
    job = claim(waiting(), now=105.0, default_provider="FARGATE")
    ended = failed(job, now=106.0, reason="ECS refused to start it: AccessDenied")
    assert (ended.state, ended.attempts, ended.attempt_count) == ("failed", (), 0)
    assert slot_change(job, ended) == -1


def test_a_redrive_makes_a_failed_job_wait_again_once_with_a_fresh_retry_budget() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    ended = reported(stopped(job, 1, stop(1), Next("failed", "job-failure", "exit 1"), now=151.0))
    again = redriven(ended, now=300.0, redrive_of="abc#1")
    assert (again.state, again.ready_at, again.redrives, again.attempts_in_budget) == (
        "waiting",
        300.0,
        1,
        0,
    )
    assert again.attempts == ended.attempts  # the history stays
    with pytest.raises(TransitionError):
        redriven(again, now=301.0, redrive_of="abc#1")


def test_the_same_redrive_message_replayed_twice_redrives_once() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    ended = reported(stopped(job, 1, stop(1), Next("failed", "job-failure", "exit 1"), now=151.0))
    again = redriven(ended, now=300.0, redrive_of="abc#1")
    back = reported(
        stopped(
            task_started(claim(again, now=301.0, default_provider="FARGATE"), 2, ARN + "2"),
            2,
            stop(1),
            Next("failed", "job-failure", "exit 1"),
            now=400.0,
        )
    )
    with pytest.raises(TransitionError, match="already"):
        redriven(back, now=401.0, redrive_of="abc#1")
    assert redriven(back, now=401.0, redrive_of="abc#2").state == "waiting"


def test_the_history_keeps_the_latest_attempts_only() -> None:
    job = waiting()
    for number in range(1, KEPT_ATTEMPTS + 6):
        job = task_started(claim(job, now=float(number), default_provider="FARGATE"), number, ARN)
        retry = Next("retry", "host", "host gone", delay=0.0)
        job = stopped(job, number, stop(None, "TerminationNotice"), retry, now=float(number))
    assert len(job.attempts) == KEPT_ATTEMPTS
    assert job.attempt_count == KEPT_ATTEMPTS + 5
    assert job.attempts[0].number == 6


def test_reasons_ecs_gives_are_cut_to_a_bounded_length() -> None:
    job = task_started(claim(waiting(), now=105.0, default_provider="FARGATE"), 1, ARN)
    long_stop = Stop(ARN, "TaskFailedToStart", "x" * 5000, None, "y" * 5000, None, 150.0)
    ended = stopped(job, 1, long_stop, Next("failed", "failed-to-start", "z" * 5000), now=151.0)
    assert ended.current is not None
    assert len(ended.current.stopped_reason or "") == 1024
    assert len(ended.reason or "") == 1024


def test_a_copied_record_is_the_one_dataclasses_replace_makes_and_the_original_is_unchanged() -> (
    None
):
    job = claim(waiting(), now=105.0, default_provider="FARGATE")
    copies = [
        (replace(job, state="running"), dataclasses.replace(job, state="running")),
        (replace(job, retry_at=7.5, size=1), dataclasses.replace(job, retry_at=7.5, size=1)),
        (replace(job, attempts=()), dataclasses.replace(job, attempts=())),
        (replace(job.attempts[0], claim=2), dataclasses.replace(job.attempts[0], claim=2)),
    ]
    for copy, expected in copies:
        assert (type(copy), copy) == (type(expected), expected)
    assert replace(job) == job
    assert replace(job) is not job
    assert job == claim(waiting(), now=105.0, default_provider="FARGATE")
    with pytest.raises(dataclasses.FrozenInstanceError):
        replace(job, state="running").state = "waiting"  # type: ignore[misc]


def test_a_copy_naming_a_field_the_record_has_not_is_refused() -> None:
    with pytest.raises(TypeError, match="'stat'"):
        replace(waiting(), stat="running")  # type: ignore[call-arg]


def test_a_write_records_the_next_version() -> None:
    before = waiting()
    assert written_over(before, replace(before, size=3)).version == before.version + 1


def test_a_record_made_from_its_fields_equals_the_one_its_constructor_makes() -> None:
    job = claim(waiting(), now=105.0, default_provider="FARGATE")
    job = running(task_started(job, 1, ARN), 1, started_at=110.0, task_arn=None)
    job = stopped(job, 1, stop(1), Next("failed", "job-failure", "exit code 1"), now=151.0)
    assert from_fields(Job, {f.name: getattr(job, f.name) for f in dataclasses.fields(Job)}) == job
    assert from_fields(Attempt, vars(job.attempts[0])) == job.attempts[0]
    least = {"number": 1, "claim": 1, "provider": "FARGATE", "claimed_at": 1.0}
    assert from_fields(Attempt, least) == Attempt(1, 1, "FARGATE", 1.0)
    assert from_fields(Job, {**REQUIRED, "version": 0}) == Job("b", "k", "j", "waiting", 0, 1.0)


REQUIRED: dict[str, object] = {
    "bucket": "b",
    "key": "k",
    "job_id": "j",
    "state": "waiting",
    "recorded_at": 1.0,
}


@pytest.mark.parametrize(
    ("values", "named"),
    [(REQUIRED, "version"), ({**REQUIRED, "version": 0, "colour": "red"}, "colour")],
)
def test_a_record_made_from_fields_it_lacks_or_does_not_have_names_them(
    values: dict[str, object], named: str
) -> None:
    with pytest.raises(TypeError, match=named):
        from_fields(Job, values)
