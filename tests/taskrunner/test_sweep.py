"""The sweep: what events cannot be trusted to do, once a minute."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from job_record import (
    claim,
    new_job,
    report_taken,
    reported,
    running,
    stop_requested,
    task_started,
)
from retry_policy import TIMEOUT_REASON
from sweep import (
    REPORT_AFTER_SECONDS,
    RESUME_AFTER_SECONDS,
    VANISHED_AFTER_SECONDS,
    Look,
    Sweep,
    decide,
    report_due,
)
from task_events import TaskState

from tests.fakes.fake_ecs import Fault
from tests.taskrunner.conftest import World, s3_record

ARN = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123456789abcdef"


def look(status: str, started_at: float | None = 1010.0) -> Look:
    from job_record import Stop

    stop = Stop(ARN, None, None, None, None, started_at, None)
    return Look(task=TaskState(ARN, "cluster", status, {}, stop))


def starting(with_arn: bool = True) -> object:
    job = claim(
        new_job(bucket="b", key="k", job_id="0" * 32, now=1000.0),
        now=1000.0,
        default_provider="FARGATE",
    )
    return task_started(job, 1, ARN) if with_arn else job


def test_a_claim_without_an_answer_is_asked_again_only_after_a_minute() -> None:
    job = starting(with_arn=False)
    assert decide(job, Look(), 1000.0 + RESUME_AFTER_SECONDS - 1, None) == "none"  # type: ignore[arg-type]
    assert decide(job, Look(), 1000.0 + RESUME_AFTER_SECONDS, None) == "resume"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seen", "now", "timeout", "action"),
    [
        (look("STOPPED"), 1100.0, None, "settle"),
        (look("RUNNING"), 1100.0, None, "running"),
        (look("PENDING", None), 1100.0, 60, "none"),  # not started yet: its clock has not begun
        (look("RUNNING", 1000.0), 1061.0, 60, "stop"),
        (look("RUNNING", 1000.0), 1059.0, 60, "running"),
        (Look(missing=True), 1000.0 + VANISHED_AFTER_SECONDS, None, "vanished"),
        (Look(missing=True), 1100.0, None, "none"),  # ECS does not list it yet
        (Look(), 1100.0, None, "none"),  # DescribeTasks failed: next minute
    ],
)
def test_what_the_sweep_does_follows_what_ecs_says_of_the_task(
    seen: Look, now: float, timeout: int | None, action: str
) -> None:
    assert decide(starting(), seen, now, timeout) == action  # type: ignore[arg-type]


def test_a_task_already_marked_running_is_not_marked_again() -> None:
    job = running(starting(), 1, started_at=1010.0, task_arn=ARN)  # type: ignore[arg-type]
    assert decide(job, look("RUNNING"), 1100.0, None) == "none"
    asked = stop_requested(job, 1, "timeout")
    assert decide(asked, look("RUNNING", 1000.0), 1100.0, 60) == "stop"  # again, until it stops


def test_a_stop_whose_event_never_came_is_settled_from_describe_tasks(world: World) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    world.ecs.finish(arn, exit_code=0)  # and its event is lost
    assert world.sweep()["settled"] == 1
    assert world.job("uploads/a.csv").state == "succeeded"
    assert world.store.slots().active == 0


def test_a_running_task_is_marked_running_with_its_start(world: World) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    started = time.time()
    world.ecs.run(arn, at=started)
    world.sweep()
    job = world.job("uploads/a.csv")
    assert job.state == "running"
    assert job.current is not None
    assert job.current.started_at == pytest.approx(started, abs=0.01)


def test_a_started_task_that_ecs_forgot_with_no_stop_seen_is_retried_as_lost(
    world: World,
) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    world.ecs.run(arn, at=time.time())
    world.sweep()  # marked running
    world.ecs.forget(arn)  # it stopped, and its event and ECS's record of it are gone
    world.later(VANISHED_AFTER_SECONDS)
    assert world.sweep()["vanished"] == 1
    job = world.job("uploads/a.csv")
    assert job.state in ("waiting", "starting")  # retried, after its delay
    assert job.attempts[0].cause == "lost"
    assert not world.messages("FAILED_JOBS_QUEUE_URL")


def test_a_task_past_its_time_limit_is_stopped_saying_why_and_fails_as_a_timeout(
    world: World,
) -> None:
    limited = world.with_settings(task_timeout_seconds=600)
    (arn,) = limited.upload(s3_record("uploads/a.csv"))["started"].values()
    limited.ecs.run(arn, at=time.time())
    limited.later(601)
    limited.sweep()
    ((stopped, reason),) = limited.ecs.stop_requests
    assert stopped == arn
    assert reason.startswith(TIMEOUT_REASON)
    # The stop's event: a timeout (143 after SIGTERM), not retried by default, reported once.
    from task_events import handle_task_event

    handle_task_event(limited.ecs.state_change(arn), limited.settings, limited.services)
    job = limited.job("uploads/a.csv")
    assert job.state == "failed"
    assert job.current is not None
    assert (job.current.cause, job.current.exit_code) == ("timeout", 143)
    (message,) = limited.messages("FAILED_JOBS_QUEUE_URL")
    assert json.loads(message["Body"])["attempts"][0]["cause"] == "timeout"


def test_a_lost_runtask_answer_is_asked_again_with_the_same_token_and_one_task_runs(
    world: World,
) -> None:
    world.ecs.inject(Fault.lost(), times=2)  # the task starts, both answers are lost
    summary = world.upload(s3_record("uploads/a.csv"))
    assert summary["started"] == {}
    job = world.job("uploads/a.csv")
    assert (job.state, job.current.task_arn if job.current else "?") == ("starting", None)
    world.later(RESUME_AFTER_SECONDS)
    assert world.sweep()["resumed"] == 1
    assert len(world.ecs.started) == 1  # one token, one task, however often it was asked
    (arn,) = world.ecs.started.values()
    resumed = world.job("uploads/a.csv")
    assert resumed.current is not None
    assert resumed.current.task_arn == arn


def test_a_runtask_that_timed_out_then_was_throttled_on_its_retry_starts_one_task(
    world: World,
) -> None:
    # Try 1 times out while ECS starts the task; botocore's retry, same token, is throttled.
    world.ecs.inject(Fault.delay(2.0), times=1)
    world.ecs.inject(Fault.throttling(), times=1)
    assert world.upload(s3_record("uploads/a.csv"))["started"] == {}
    world.ecs.wait_for_tasks(1)
    job = world.job("uploads/a.csv")
    assert (job.state, world.store.slots().active) == ("starting", 1)  # not given up
    world.upload(s3_record("uploads/b.csv", sequencer="02"))  # a fill, within the minute
    assert world.sweep().get("resumed", 0) == 0
    world.later(RESUME_AFTER_SECONDS)
    assert world.sweep()["resumed"] == 1
    (arn,) = world.ecs.tasks_for("uploads/a.csv")
    resumed = world.job("uploads/a.csv")
    assert resumed.current is not None
    assert (resumed.claims, resumed.current.task_arn) == (1, arn)


def test_a_resumed_claim_that_ecs_turns_away_keeps_its_token_and_one_task_runs(
    world: World,
) -> None:
    world.ecs.inject(Fault.lost(), times=2)  # both answers lost; ECS starts it anyway
    world.upload(s3_record("uploads/a.csv"))
    world.ecs.wait_for_tasks(1)
    world.later(RESUME_AFTER_SECONDS)
    world.ecs.inject(Fault.throttling(), times=2)  # the sweep's resume is throttled, twice
    world.sweep()
    assert world.job("uploads/a.csv").claims == 1  # "not now" to a resume proves nothing
    world.later(RESUME_AFTER_SECONDS)
    world.sweep()
    (arn,) = world.ecs.tasks_for("uploads/a.csv")
    job = world.job("uploads/a.csv")
    assert job.current is not None
    assert (job.claims, job.current.task_arn, world.store.slots().active) == (1, arn, 1)


def test_a_sweep_acting_on_a_stale_read_does_not_resume_a_claim_settled_since(
    world: World,
) -> None:
    world.ecs.inject(Fault.conflict(None), times=1)  # claim 1: lost, and ECS started nothing
    world.upload(s3_record("uploads/a.csv"))
    world.later(RESUME_AFTER_SECONDS)
    late = Sweep(world.settings, world.services)
    seen = late.store.needing_sweep()  # a sweep reads its jobs ...
    # ... while another resumes claim 1, and ECS refuses it for good.
    world.ecs.inject(Fault.error("InvalidParameterException", "bad subnet"), times=1)
    world.sweep()
    assert world.job("uploads/a.csv").state == "failed"
    calls = len(world.ecs.calls)
    for stale in seen:  # the first sweep acts on claim 1 as it read it
        late.act(stale, Look(), world.services.clock())
    assert len(world.ecs.calls) == calls  # no RunTask for a job that failed
    assert world.ecs.tasks_for("uploads/a.csv") == set()
    assert world.job("uploads/a.csv").state == "failed"


def test_a_job_that_waited_past_the_limit_fails_into_the_dead_letter_queue_saying_why(
    world: World,
) -> None:
    capped = world.with_settings(max_concurrent_tasks=1, wait_timeout_seconds=600)
    capped.upload(s3_record("uploads/first.csv"))
    capped.upload(s3_record("uploads/second.csv", sequencer="02"))
    capped.later(601)
    assert capped.sweep()["waited too long"] == 1
    assert capped.job("uploads/second.csv").state == "failed"
    (message,) = capped.messages("DEAD_LETTER_QUEUE_URL")
    assert "longer than the limit" in message["MessageAttributes"]["reason"]["StringValue"]
    event = json.loads(message["Body"])
    assert event["Records"][0]["s3"]["object"]["key"] == "uploads/second.csv"
    assert event["redriveOf"]


def test_a_failure_whose_report_was_not_sent_is_sent_by_the_sweep(world: World) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    broken = world.with_settings(failed_jobs_queue_url=world.env["FAILED_JOBS_QUEUE_URL"] + "-gone")
    broken.stopped(arn, exit_code=1)
    assert not world.job("uploads/a.csv").reported
    world.later(61)
    assert world.sweep()["reported"] == 1
    assert len(world.messages("FAILED_JOBS_QUEUE_URL")) == 1
    assert world.job("uploads/a.csv").reported


def test_two_sweeps_that_read_the_same_unsent_failure_report_it_once(world: World) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    broken = world.with_settings(failed_jobs_queue_url=world.env["FAILED_JOBS_QUEUE_URL"] + "-gone")
    broken.stopped(arn, exit_code=1)
    world.later(61)
    now = world.services.clock()
    first, second = Sweep(world.settings, world.services), Sweep(world.settings, world.services)
    read_by_first, read_by_second = first.store.needing_sweep(), second.store.needing_sweep()
    for job in read_by_first:
        first.report(job, now)
    for job in read_by_second:
        second.report(job, now)
    assert len(world.messages("FAILED_JOBS_QUEUE_URL")) == 1
    assert world.job("uploads/a.csv").reported


def test_a_report_another_sweep_took_on_is_sent_again_only_after_a_minute() -> None:
    recorded = new_job(bucket="b", key="k", job_id="0" * 32, now=900.0)
    job = replace(recorded, state="failed", finished_at=1000.0, reported=False)
    assert not report_due(job, 1000.0 + REPORT_AFTER_SECONDS - 1)
    assert report_due(job, 1000.0 + REPORT_AFTER_SECONDS)
    taken = report_taken(job, now=1100.0)
    assert not report_due(taken, 1100.0 + REPORT_AFTER_SECONDS - 1)  # it may still be sending
    assert report_due(taken, 1100.0 + REPORT_AFTER_SECONDS)  # it died: send it after all
    assert not report_due(reported(taken), 9999.0)


def test_the_sweep_reports_the_oldest_wait_every_minute_also_when_nothing_waits(
    world: World,
) -> None:
    world.sweep()
    (gauge,) = world.metrics
    assert gauge["OldestWaitSeconds"] == 0
    assert gauge["Jobs"] == world.settings.state_table
    assert "JobsWaiting" not in gauge  # idle: one metric, not three, to be billed
    capped = world.with_settings(max_concurrent_tasks=1)
    capped.upload(s3_record("uploads/first.csv"))
    capped.upload(s3_record("uploads/second.csv", sequencer="02"))
    capped.later(300)
    capped.sweep()
    latest = world.metrics[-1]
    assert latest["OldestWaitSeconds"] >= 300
    assert (latest["JobsWaiting"], latest["JobsRunning"]) == (1, 1)


def test_a_retry_whose_delay_is_over_goes_before_the_jobs_recorded_after_it(
    world: World,
) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    (first,) = capped.upload(s3_record("uploads/a.csv"))["started"].values()
    capped.upload(s3_record("uploads/b.csv", sequencer="02"))
    capped.stopped(first, exit_code=143, stop_code="SpotInterruption", reason="interrupted")
    # In its delay, the retry leaves its slot to b, the next in line.
    b_task = capped.job("uploads/b.csv").current.task_arn
    assert b_task is not None
    capped.upload(s3_record("uploads/c.csv", sequencer="03"))
    assert capped.sweep()["started"] == 0  # a's delay is not over, and b holds the slot
    capped.later(capped.settings.retry.first_delay + 1)
    swept = capped.sweep()
    assert (swept["retry due"], swept["started"]) == (1, 0)  # due, but the slot is b's
    capped.stopped(b_task, exit_code=0)
    retried = capped.job("uploads/a.csv")
    assert (retried.state, retried.attempt_count) == ("starting", 2)
    assert capped.job("uploads/c.csv").state == "waiting"  # recorded after a: behind it
