"""Failure paths through botocore's real HTTP, retry and timeout code, against the fake ECS."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from dispatch import Summary, TasksNotStartedError
from dispatch import process_uploads as run_event
from runner_settings import RunnerSettings
from services import MAX_ATTEMPTS, client_config

from tests.fakes.fake_ecs import FakeEcs, Fault, RunTaskCall
from tests.taskrunner.conftest import BUCKET, RecordingSqs, s3_event, s3_record, services_for


def process_event(
    event: Any, settings: RunnerSettings, ecs: Any, sqs: RecordingSqs | None = None
) -> Summary:
    """The direct path with this ECS client and a recording SQS."""
    return run_event(event, settings, services_for(ecs, sqs))


def test_a_capacity_failure_parks_the_upload_in_the_backlog_saying_why(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:MEMORY", "no Fargate capacity"))
    sqs = RecordingSqs()
    record = s3_record("uploads/a b.csv")
    summary = process_event(s3_event(record), settings, fake_ecs.client(client_config()), sqs)
    assert fake_ecs.tasks == []
    assert (
        "RunTask failures: RESOURCE:MEMORY (no Fargate capacity)"
        in summary["parked"]["uploads/a b.csv"]
    )
    (message,) = sqs.sent
    assert message["QueueUrl"] == settings.backlog_queue_url
    # The record exactly as S3 sent it: its token, and so its task, stay the same.
    assert json.loads(message["MessageBody"]) == {"Records": [record]}
    assert 1 <= message["DelaySeconds"] <= settings.first_retry_seconds


def test_after_a_capacity_failure_the_rest_of_the_event_waits_without_asking_ecs_again(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:MEMORY", "no Fargate capacity"))
    keys = [f"uploads/{n}.csv" for n in range(4)]
    summary = process_event(
        s3_event(*(s3_record(key) for key in keys)),
        settings,
        fake_ecs.client(client_config()),
        RecordingSqs(),
    )
    assert len(fake_ecs.calls) == 1
    assert set(summary["parked"]) == set(keys)
    # Each names ECS's answer once, however far down the event it stands.
    for key in keys[1:]:
        assert summary["parked"][key].count("not tried:") == 1, summary["parked"][key]
        assert "RESOURCE:MEMORY (no Fargate capacity)" in summary["parked"][key]


def test_an_upload_that_cannot_be_parked_makes_the_invocation_raise_naming_both_reasons(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:MEMORY"))
    with pytest.raises(TasksNotStartedError) as raised:
        process_event(
            s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client(), RecordingSqs(True)
        )
    reason = raised.value.failures[f"s3://{BUCKET}/uploads/a.csv"]
    assert "RESOURCE:MEMORY" in reason
    assert "parking it in the backlog failed" in reason
    assert "AccessDenied" in reason


def test_throttling_is_retried_with_backoff_then_starts_one_task(
    fake_ecs: FakeEcs, settings: RunnerSettings, backoff_sleeps: list[float]
) -> None:
    fake_ecs.inject(Fault.throttling(), times=3)
    summary = process_event(
        s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client(client_config())
    )
    assert len(fake_ecs.calls) == 4
    assert len(backoff_sleeps) == 3
    assert list(summary["started"].values()) == [task["taskArn"] for task in fake_ecs.tasks]


def test_persistent_throttling_parks_the_upload_after_the_configured_attempts(
    fake_ecs: FakeEcs, settings: RunnerSettings, backoff_sleeps: list[float]
) -> None:
    fake_ecs.inject(Fault.throttling(), times=None)
    sqs = RecordingSqs()
    summary = process_event(
        s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client(client_config()), sqs
    )
    assert len(fake_ecs.calls) == MAX_ATTEMPTS
    assert (
        f"ThrottlingException: Rate exceeded (after {MAX_ATTEMPTS} attempts)"
        in (summary["parked"]["uploads/a.csv"])
    )
    assert sqs.parked_keys() == ["uploads/a.csv"]
    # Throttling backoff starts at up to 1 s and doubles: the retries ride out a short burst.
    assert len(backoff_sleeps) == MAX_ATTEMPTS - 1


def test_a_persistent_server_error_parks_the_upload(
    fake_ecs: FakeEcs, settings: RunnerSettings, backoff_sleeps: list[float]
) -> None:
    fake_ecs.inject(Fault.error("ServerException", "internal", status=500), times=None)
    sqs = RecordingSqs()
    summary = process_event(
        s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client(client_config()), sqs
    )
    assert "ServerException: internal" in summary["parked"]["uploads/a.csv"]
    assert len(fake_ecs.calls) == MAX_ATTEMPTS
    assert sqs.parked_keys() == ["uploads/a.csv"]


def test_an_access_error_is_not_retried(fake_ecs: FakeEcs, settings: RunnerSettings) -> None:
    fake_ecs.inject(Fault.error("AccessDeniedException", "no ecs:RunTask"), times=None)
    with pytest.raises(TasksNotStartedError, match="AccessDeniedException: no ecs:RunTask"):
        process_event(
            s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client(client_config())
        )
    assert len(fake_ecs.calls) == 1


def test_a_conflict_counts_as_already_started_not_as_a_failure(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.conflict(["arn:aws:ecs:us-east-1:123456789012:task/jobs/earlier"]))
    summary = process_event(s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client())
    assert summary["started"] == {
        "uploads/a.csv": "arn:aws:ecs:us-east-1:123456789012:task/jobs/earlier"
    }


def test_a_conflict_without_the_task_arn_is_reported_as_skipped(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.conflict())
    summary = process_event(s3_event(s3_record("uploads/a.csv")), settings, fake_ecs.client())
    assert summary["started"] == {}
    assert "started earlier" in summary["skipped"]["uploads/a.csv"]


def test_a_duplicate_delivery_or_retry_starts_no_second_task(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    event = s3_event(s3_record("uploads/a.csv"))
    ecs = fake_ecs.client()
    first = process_event(event, settings, ecs)
    again = process_event(event, settings, ecs)
    assert first == again
    assert len(fake_ecs.tasks) == 1
    assert len(fake_ecs.calls) == 2


def test_a_new_upload_of_the_same_key_starts_another_task(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    ecs = fake_ecs.client()
    process_event(s3_event(s3_record("uploads/a.csv", sequencer="01")), settings, ecs)
    process_event(s3_event(s3_record("uploads/a.csv", sequencer="02")), settings, ecs)
    assert len(fake_ecs.started) == 2


def test_the_same_upload_twice_in_one_event_is_called_once(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    record = s3_record("uploads/a.csv")
    summary = process_event(s3_event(record, record), settings, fake_ecs.client())
    assert len(fake_ecs.calls) == 1
    assert len(summary["started"]) == 1


def test_one_failing_record_does_not_stop_the_others_and_the_invocation_raises(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    def is_bad(call: RunTaskCall) -> bool:
        return call.s3_key == "uploads/bad.csv"

    fake_ecs.inject(Fault.failure("AGENT"), times=None, when=is_bad)
    event = s3_event(
        s3_record("uploads/a.csv", sequencer="01"),
        s3_record("uploads/bad.csv", sequencer="02"),
        s3_record("uploads/c.csv", sequencer="03"),
    )
    with pytest.raises(TasksNotStartedError) as raised:
        process_event(event, settings, fake_ecs.client())
    assert raised.value.failures == {f"s3://{BUCKET}/uploads/bad.csv": "RunTask failures: AGENT"}
    assert "1 of 3 records started no task" in str(raised.value)
    assert set(raised.value.summary["started"]) == {"uploads/a.csv", "uploads/c.csv"}
    assert {call.s3_key for call in fake_ecs.calls if call.task_arn} == {
        "uploads/a.csv",
        "uploads/c.csv",
    }


def test_a_timed_out_call_is_retried_with_the_same_token_and_starts_one_task(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.delay(0.6))
    ecs = fake_ecs.client(client_config(read_timeout=0.2))
    summary = process_event(s3_event(s3_record("uploads/a.csv")), settings, ecs)
    tokens = {call.client_token for call in fake_ecs.calls}
    assert len(fake_ecs.calls) == 2
    assert len(tokens) == 1
    (task_arn,) = summary["started"].values()
    assert fake_ecs.started == {tokens.pop(): task_arn}


def test_an_unreachable_endpoint_parks_the_upload_after_retries(
    settings: RunnerSettings, backoff_sleeps: list[float]
) -> None:
    with FakeEcsGone() as url:
        import boto3

        ecs = boto3.client(
            "ecs",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=client_config(max_attempts=2, connect_timeout=0.5),
        )
        sqs = RecordingSqs()
        summary = process_event(s3_event(s3_record("uploads/a.csv")), settings, ecs, sqs)
    assert "EndpointConnectionError" in summary["parked"]["uploads/a.csv"]
    assert sqs.parked_keys() == ["uploads/a.csv"]


class FakeEcsGone:
    """A loopback URL where nothing listens (a port that was just free)."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        return None


def test_the_fake_answers_a_reused_token_with_other_parameters_with_a_conflict(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    ecs = fake_ecs.client()
    first = process_event(s3_event(s3_record("uploads/a.csv")), settings, ecs)
    redeployed = dataclasses.replace(
        settings, task_definition_arn=f"{settings.task_definition_arn[:-1]}2"
    )
    again = process_event(s3_event(s3_record("uploads/a.csv")), redeployed, ecs)
    assert again == first  # ConflictException carried the first task's ARN
    assert len(fake_ecs.tasks) == 1
    assert fake_ecs.calls[1].task_arn is None


def test_the_fake_describes_the_tasks_it_started(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    ecs = fake_ecs.client()
    summary = process_event(s3_event(s3_record("uploads/a b.csv")), settings, ecs)
    (task_arn,) = summary["started"].values()
    answer = ecs.describe_tasks(cluster=settings.cluster_arn, tasks=[task_arn, f"{task_arn}-gone"])
    (task,) = answer["tasks"]
    assert task["startedBy"] == "s3-upload"
    assert task["capacityProviderName"] == "FARGATE_SPOT"
    environment = task["overrides"]["containerOverrides"][0]["environment"]
    assert {"name": "S3_KEY", "value": "uploads/a b.csv"} in environment
    assert answer["failures"] == [{"arn": f"{task_arn}-gone", "reason": "MISSING"}]
