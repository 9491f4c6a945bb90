"""A task stopped: its job is settled from ECS's event, its slot filled by the oldest waiting job.

EventBridge delivers each event at least once and not in order: duplicates, late events of an
earlier attempt and events of tasks the runner did not start change nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from task_events import epoch, handle_task_event, is_task_event, task_state
from task_starter import build_run_task_request
from upload_events import MalformedEventError

from tests.fakes.fake_ecs import Fault
from tests.taskrunner.conftest import World, load_event, s3_record


def start(world: World, key: str) -> str:
    summary = world.upload(s3_record(key))
    (arn,) = summary["started"].values()
    return str(arn)


def test_ecs_event_fields_are_read_as_ecs_documents_them() -> None:
    event = load_event("task_stopped.json")
    assert is_task_event(event)
    state = task_state(event["detail"], "job")
    assert state.job == ("uploads-bucket", "uploads/report.csv", "0f" * 16, 2)
    assert (state.last_status, state.version) == ("STOPPED", 4)
    assert (state.stop.stop_code, state.stop.exit_code) == ("EssentialContainerExited", 1)
    assert state.stop.provider == "FARGATE_SPOT"
    assert state.stop.started_at == epoch("2026-11-28T14:00:51.103Z")
    assert state.stop.started_at is not None
    assert state.stop.stopped_at is not None
    assert state.stop.started_at < state.stop.stopped_at


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("overrides", [], r"detail\.overrides must be an object, not list"),
        ("overrides", {"containerOverrides": {}}, r"overrides\.containerOverrides must be a list"),
        (
            "overrides",
            {"containerOverrides": [{"name": "job", "environment": 5}]},
            r"overrides\.containerOverrides\[\]\.environment must be a list of pairs, not int",
        ),
        ("containers", 5, r"detail\.containers must be a list of containers, not int"),
        ("containers", [{"name": "job", "reason": 7}], r"containers\[\]\.reason must be a string"),
        ("stoppedReason", ["x"], r"detail\.stoppedReason must be a string, not list"),
        ("lastStatus", 3, r"detail\.lastStatus must be a string"),
    ],
)
def test_an_event_field_of_a_type_ecs_never_sends_is_named_in_one_message(
    field: str, value: object, named: str
) -> None:
    detail = {**load_event("task_stopped.json")["detail"], field: value}
    with pytest.raises(MalformedEventError, match=named):
        task_state(detail, "job")


def test_a_malformed_task_event_is_refused_naming_its_field_and_starts_nothing(
    world: World,
) -> None:
    event = load_event("task_stopped.json")
    event = {**event, "detail": {**event["detail"], "overrides": "x"}}
    calls = len(world.ecs.calls)
    with pytest.raises(MalformedEventError, match=r"detail\.overrides must be an object"):
        handle_task_event(event, world.settings, world.services)
    assert len(world.ecs.calls) == calls


def test_a_task_that_exited_0_makes_its_job_succeed_and_frees_its_slot(world: World) -> None:
    arn = start(world, "uploads/a.csv")
    answer = world.stopped(arn, exit_code=0)
    assert answer["outcome"] == "settled"
    job = world.job("uploads/a.csv")
    assert (job.state, world.store.slots().active) == ("succeeded", 0)
    assert job.current is not None
    assert (job.current.exit_code, job.current.cause) == (0, "succeeded")


def test_the_freed_slot_goes_to_the_oldest_waiting_job_at_once(world: World) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    arn = start(capped, "uploads/first.csv")
    capped.upload(s3_record("uploads/second.csv", sequencer="02"))
    capped.upload(s3_record("uploads/third.csv", sequencer="03"))
    answer = capped.stopped(arn)
    assert answer["started"] == "1"
    assert capped.job("uploads/second.csv").state == "starting"
    assert capped.job("uploads/third.csv").state == "waiting"


def test_a_duplicate_event_changes_nothing_and_frees_no_second_slot(world: World) -> None:
    capped = world.with_settings(max_concurrent_tasks=2)
    first = start(capped, "uploads/a.csv")
    start(capped, "uploads/b.csv")
    capped.stopped(first)
    event = capped.ecs.state_change(first)
    again = handle_task_event(event, capped.settings, capped.services)
    assert again["outcome"] == "already settled"
    assert capped.store.slots().active == 1


def test_a_late_event_of_an_earlier_attempt_leaves_the_retry_alone(world: World) -> None:
    arn = start(world, "uploads/a.csv")
    first_stop = world.ecs.state_change(arn) | {}
    world.stopped(arn, exit_code=143, stop_code="SpotInterruption", reason="interrupted")
    retry = world.job("uploads/a.csv")
    assert (retry.state, retry.attempt_count) == ("waiting", 1)
    # The retry's delay is over: the sweep starts attempt 2.
    world.store.apply(retry, replace(retry, retry_at=time.time() - 1))
    world.sweep()
    second = world.job("uploads/a.csv")
    assert (second.state, second.attempt_count) == ("starting", 2)
    handle_task_event(world.ecs.state_change(arn), world.settings, world.services)
    handle_task_event(first_stop, world.settings, world.services)
    assert world.job("uploads/a.csv").state == "starting"


def test_the_stop_of_a_task_from_another_claim_of_the_same_attempt_settles_nothing(
    world: World,
) -> None:
    world.ecs.inject(Fault.conflict(None), times=1)  # claim 1's answer is lost
    world.upload(s3_record("uploads/a.csv"))
    job = world.job("uploads/a.csv")
    assert job.current is not None
    # A task of attempt 1 that another claim started (none should exist: defence in depth).
    other = replace(job.current, claim=job.current.claim + 1)
    (stray,) = world.ecs.client().run_task(**build_run_task_request(job, other, world.settings))[
        "tasks"
    ]
    assert world.stopped(stray["taskArn"], exit_code=1)["outcome"] == "already settled"
    after = world.job("uploads/a.csv")
    assert (after.state, after.version) == ("starting", job.version)


def test_an_event_of_a_task_the_runner_did_not_start_is_ignored(world: World) -> None:
    event = load_event("task_stopped.json")
    event["detail"]["clusterArn"] = world.settings.cluster_arn
    event["detail"]["overrides"]["containerOverrides"][0]["environment"] = []
    assert handle_task_event(event, world.settings, world.services)["outcome"] == "ignored"
    other_cluster = load_event("task_stopped.json")
    assert handle_task_event(other_cluster, world.settings, world.services)["outcome"] == "ignored"


def test_a_job_failure_is_reported_once_with_every_attempt_and_where_its_logs_are(
    world: World,
) -> None:
    arn = start(world, "uploads/a.csv")
    world.stopped(arn, exit_code=2)
    handle_task_event(world.ecs.state_change(arn), world.settings, world.services)  # again
    (message,) = world.messages("FAILED_JOBS_QUEUE_URL")
    body = json.loads(message["Body"])
    task_id = arn.rsplit("/", 1)[-1]
    assert (body["key"], body["exitCode"], body["stopCode"]) == (
        "uploads/a.csv",
        2,
        "EssentialContainerExited",
    )
    assert body["logStream"] == f"job/job/{task_id}"
    assert body["logGroup"] == "/jobs/job"
    (attempt,) = body["attempts"]
    assert (attempt["attempt"], attempt["taskArn"], attempt["cause"]) == (1, arn, "job-failure")
    assert world.job("uploads/a.csv").reported


@pytest.mark.parametrize(
    ("stop_code", "reason", "exit_code"),
    [
        ("SpotInterruption", "Your Spot Task was interrupted.", 143),
        ("TaskFailedToStart", "CannotPullContainerError: i/o timeout", None),
    ],
)
def test_an_infrastructure_stop_is_retried_not_reported(
    world: World, stop_code: str, reason: str, exit_code: int | None
) -> None:
    arn = start(world, "uploads/a.csv")
    world.stopped(arn, exit_code=exit_code, stop_code=stop_code, reason=reason)
    job = world.job("uploads/a.csv")
    assert job.state == "waiting"
    assert job.ready_at == job.recorded_at  # it keeps its place
    assert job.retry_at is not None
    assert job.retry_at > job.recorded_at  # after its backoff
    assert world.messages("FAILED_JOBS_QUEUE_URL") == []
