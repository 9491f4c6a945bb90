"""The runner through botocore's real HTTP, retry and timeout code, against a fake ECS that
answers as ECS does under load and on failure (tests/fakes/fake_ecs.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sweep import RESUME_AFTER_SECONDS

from tests.fakes.fake_ecs import Fault
from tests.taskrunner.conftest import World, s3_record


def test_throttling_is_retried_with_backoff_then_starts_one_task(
    world: World, backoff_sleeps: list[float]
) -> None:
    world.ecs.inject(Fault.throttling(), times=1)
    summary = world.upload(s3_record("uploads/a.csv"))
    assert list(summary["started"]) == ["uploads/a.csv"]
    assert len(world.ecs.started) == 1
    assert backoff_sleeps  # botocore paused before its retry


@pytest.mark.parametrize(
    "fault", [Fault.throttling(), Fault.error("ServerException", "boom", status=500)]
)
def test_throttling_or_server_errors_that_outlast_the_retries_keep_the_claim_for_the_sweep(
    world: World, backoff_sleeps: list[float], fault: Fault
) -> None:
    # A retried call cannot prove that no attempt started the task: the claim keeps its slot
    # and its clientToken, and the sweep asks again with them.
    world.ecs.inject(fault, times=None)
    summary = world.upload(s3_record("uploads/a.csv"))
    assert summary["started"] == {}
    job = world.job("uploads/a.csv")
    assert (job.state, world.store.slots().active) == ("starting", 1)
    assert job.current is not None
    assert job.current.task_arn is None
    world.ecs.clear_faults()
    world.later(RESUME_AFTER_SECONDS)
    assert world.sweep()["resumed"] == 1
    (arn,) = world.ecs.tasks_for("uploads/a.csv")
    resumed = world.job("uploads/a.csv")
    assert resumed.current is not None
    assert (resumed.current.claim, resumed.current.task_arn) == (job.current.claim, arn)


def test_an_access_error_is_asked_once_and_fails_the_job(world: World) -> None:
    world.ecs.inject(Fault.error("AccessDeniedException", "no ecs:RunTask"), times=None)
    world.upload(s3_record("uploads/a.csv"))
    assert len(world.ecs.calls) == 1
    assert world.job("uploads/a.csv").state == "failed"


def test_a_conflict_on_the_token_counts_as_the_task_already_started(world: World) -> None:
    existing = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123"
    world.ecs.inject(Fault.conflict([existing]))
    summary = world.upload(s3_record("uploads/a.csv"))
    assert summary["started"] == {"uploads/a.csv": existing}
    job = world.job("uploads/a.csv")
    assert job.current is not None
    assert job.current.task_arn == existing


def test_the_same_upload_twice_in_one_event_is_one_job_and_one_call(world: World) -> None:
    record = s3_record("uploads/a.csv")
    summary = world.upload(record, record)
    assert len(summary["started"]) == 1
    assert len(world.ecs.calls) == 1


def test_one_failing_record_does_not_stop_the_others(world: World) -> None:
    world.ecs.inject(
        Fault.error("InvalidParameterException", "bad"),
        times=None,
        when=lambda call: call.s3_key == "uploads/bad.csv",
    )
    summary = world.upload(
        s3_record("uploads/a.csv", sequencer="01"),
        s3_record("uploads/bad.csv", sequencer="02"),
        s3_record("uploads/c.csv", sequencer="03"),
    )
    assert set(summary["started"]) == {"uploads/a.csv", "uploads/c.csv"}
    assert world.job("uploads/bad.csv").state == "failed"


def test_an_unreachable_endpoint_leaves_the_slot_held_for_the_sweep_to_ask_again(
    world: World, backoff_sleeps: list[float]
) -> None:
    from services import Services, client_config

    dead = Services(
        __import__("boto3").client(
            "ecs",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            config=client_config(max_attempts=2, connect_timeout=0.2, read_timeout=0.2),
        ),
        sqs=world.services.sqs,
        dynamodb=world.services.dynamodb,
        emit_metric=lambda line: None,
    )
    unreachable = World(world.settings, dead, world.ecs, world.env, world.skew, world.metrics)
    summary = unreachable.upload(s3_record("uploads/a.csv"))
    assert summary["started"] == {}
    job = world.job("uploads/a.csv")
    assert job.state == "starting"  # it may run: the same token asks again
    assert job.current is not None
    assert job.current.task_arn is None
    assert world.store.slots().active == 1


def test_the_fake_answers_a_reused_token_with_other_parameters_with_a_conflict(
    world: World,
) -> None:
    summary = world.upload(s3_record("uploads/a.csv"))
    (arn,) = summary["started"].values()
    request: dict[str, Any] = dict(world.ecs.calls[0].request)
    request["taskDefinition"] = request["taskDefinition"][:-1] + "2"
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as raised:
        world.services.ecs.run_task(**request)
    assert raised.value.response["Error"]["Code"] == "ConflictException"
    assert raised.value.response.get("resourceIds") == [arn]
    assert len(world.ecs.tasks) == 1


def test_the_fake_describes_the_tasks_it_started(world: World) -> None:
    summary = world.upload(s3_record("uploads/a b.csv"))
    (task_arn,) = summary["started"].values()
    answer = world.services.ecs.describe_tasks(
        cluster=world.settings.cluster_arn, tasks=[task_arn, f"{task_arn}-gone"]
    )
    (task,) = answer["tasks"]
    assert task["startedBy"] == "s3-upload"
    assert task["capacityProviderName"] == "FARGATE_SPOT"
    environment = task["overrides"]["containerOverrides"][0]["environment"]
    assert {"name": "S3_KEY", "value": "uploads/a b.csv"} in environment
    assert answer["failures"] == [{"arn": f"{task_arn}-gone", "reason": "MISSING"}]
