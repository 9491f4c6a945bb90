"""The RunTask request planned for an upload, and which records start no task (pure functions)."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from dispatch import Summary, TasksNotStartedError
from dispatch import process_uploads as run_event
from runner_settings import RunnerSettings
from task_starter import STARTED_BY, build_run_task_request, skip_reason, start_task
from upload_events import Upload, client_token

from tests.taskrunner.conftest import BUCKET, RecordingSqs, s3_event, s3_record, services_for

UPLOAD = Upload(BUCKET, "uploads/a b+c.csv", "ObjectCreated:Put", sequencer="0A", etag="e")


def process_event(event: Any, settings: RunnerSettings, ecs: Any, **options: Any) -> Summary:
    return run_event(event, settings, services_for(ecs), **options)


def environment(request: Any) -> dict[str, str]:
    (override,) = request["overrides"]["containerOverrides"]
    return {pair["name"]: pair["value"] for pair in override["environment"]}


def test_the_request_carries_the_upload_and_the_settings(settings: RunnerSettings) -> None:
    request = build_run_task_request(UPLOAD, settings)
    assert request["cluster"] == settings.cluster_arn
    assert request["taskDefinition"] == settings.task_definition_arn
    assert request["count"] == 1
    assert request["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}
    ]
    assert "launchType" not in request
    assert request["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"],
            "securityGroups": ["sg-0123abcd"],
            "assignPublicIp": "DISABLED",
        }
    }
    assert request["overrides"]["containerOverrides"][0]["name"] == "job"
    assert environment(request) == {"S3_BUCKET": BUCKET, "S3_KEY": "uploads/a b+c.csv"}
    assert request["propagateTags"] == "TASK_DEFINITION"
    assert request["clientToken"] == client_token(UPLOAD)


def test_started_by_marks_an_upload_within_36_allowed_characters(settings: RunnerSettings) -> None:
    started_by = build_run_task_request(UPLOAD, settings)["startedBy"]
    assert started_by == STARTED_BY
    assert len(started_by) <= 36
    assert all(char.isalnum() or char in "-_/" for char in started_by)


def test_the_version_is_passed_when_the_record_has_one(settings: RunnerSettings) -> None:
    versioned = Upload(BUCKET, "k", "ObjectCreated:Put", version_id="v1")
    assert environment(build_run_task_request(versioned, settings))["S3_VERSION_ID"] == "v1"


def test_the_bucket_comes_from_the_record_not_from_settings(settings: RunnerSettings) -> None:
    other = Upload("another-bucket", "k", "ObjectCreated:Put")
    assert environment(build_run_task_request(other, settings))["S3_BUCKET"] == "another-bucket"


def test_a_record_without_identity_starts_a_task_without_a_fixed_token(
    settings: RunnerSettings,
) -> None:
    request = build_run_task_request(Upload(BUCKET, "k", "ObjectCreated:Put"), settings)
    assert "clientToken" not in request  # botocore fills in a random one


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    ],
)
def test_every_kind_of_creation_starts_a_task(event_name: str, settings: RunnerSettings) -> None:
    assert skip_reason(Upload(BUCKET, "uploads/k", event_name), settings) is None


def test_a_removal_is_skipped_as_not_an_upload(settings: RunnerSettings) -> None:
    reason = skip_reason(Upload(BUCKET, "uploads/k", "ObjectRemoved:Delete"), settings)
    assert reason is not None
    assert "not an upload" in reason


def test_a_key_under_the_result_prefix_is_skipped_saying_why(settings: RunnerSettings) -> None:
    reason = skip_reason(Upload(BUCKET, "results/uploads/k.json", "ObjectCreated:Put"), settings)
    assert reason is not None
    assert "RESULT_PREFIX 'results/'" in reason


def answer_with_failures(settings: RunnerSettings, reason: str, detail: str = "") -> Any:
    ecs = boto3.client("ecs", region_name="us-east-1")
    failure = {"reason": reason, **({"detail": detail} if detail else {})}
    with Stubber(ecs) as stubber:
        stubber.add_response(
            "run_task",
            {"tasks": [], "failures": [failure]},
            build_run_task_request(UPLOAD, settings),
        )
        return start_task(ecs, UPLOAD, settings)


def test_a_capacity_shortage_in_the_answer_waits_a_short_while_naming_its_reason(
    settings: RunnerSettings,
) -> None:
    result = answer_with_failures(settings, "RESOURCE:MEMORY", "no capacity")
    assert (result.outcome, result.full) == ("waiting", False)
    assert result.reason == "RunTask failures: RESOURCE:MEMORY (no capacity)"


def test_the_account_quota_in_the_answer_waits_its_turn(settings: RunnerSettings) -> None:
    reason = "You've reached the limit on the number of vCPUs you can run concurrently"
    result = answer_with_failures(settings, reason)
    assert (result.outcome, result.full) == ("waiting", True)


def test_the_account_quota_as_an_error_waits_its_turn(settings: RunnerSettings) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    with Stubber(ecs) as stubber:
        stubber.add_client_error(
            "run_task",
            "ClientException",
            "You've reached the limit on the number of tasks you can run concurrently",
        )
        result = start_task(ecs, UPLOAD, settings)
    assert (result.outcome, result.full) == ("waiting", True)


def test_any_other_failure_in_the_answer_cannot_be_mended_by_waiting(
    settings: RunnerSettings,
) -> None:
    result = answer_with_failures(settings, "MISSING")
    assert result.outcome == "failed"
    assert result.reason == "RunTask failures: MISSING"


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "InvalidParameterException", "ClusterNotFoundException"]
)
def test_a_request_ecs_rejects_cannot_be_mended_by_waiting(
    code: str, settings: RunnerSettings
) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    with Stubber(ecs) as stubber:
        stubber.add_client_error("run_task", code, "rejected")
        result = start_task(ecs, UPLOAD, settings)
    assert result.outcome == "failed"
    assert result.reason is not None
    assert result.reason.startswith(f"{code}: rejected")


def test_a_conflict_counts_as_already_started_with_the_existing_task(
    settings: RunnerSettings,
) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    existing = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123"
    with Stubber(ecs) as stubber:
        stubber.add_client_error(
            "run_task",
            service_error_code="ConflictException",
            service_message="token in use",
            modeled_fields={"resourceIds": [existing]},
        )
        summary = process_event(s3_event(s3_record("uploads/a.csv")), settings, ecs)
    assert summary == {"started": {"uploads/a.csv": existing}, "skipped": {}, "parked": {}}


def test_every_record_is_logged_as_one_json_line(
    settings: RunnerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    event = s3_event(s3_record("uploads/a.csv"), s3_record("results/a.csv.json"))
    with Stubber(ecs) as stubber, caplog.at_level(logging.INFO, logger="taskrunner"):
        stubber.add_response("run_task", {"tasks": [{"taskArn": "arn:task/1"}], "failures": []})
        process_event(event, settings, ecs)
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert lines[0] == {
        "record": 0,
        "outcome": "started",
        "bucket": BUCKET,
        "key": "uploads/a.csv",
        "event": "ObjectCreated:Put",
        "taskArn": "arn:task/1",
    }
    assert lines[1]["outcome"] == "skipped"
    assert "RESULT_PREFIX" in lines[1]["reason"]


def test_a_failed_record_is_logged_as_an_error(
    settings: RunnerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    with Stubber(ecs) as stubber, caplog.at_level(logging.INFO, logger="taskrunner"):
        stubber.add_client_error("run_task", "AccessDeniedException", "not allowed")
        with pytest.raises(TasksNotStartedError):
            process_event(s3_event(s3_record("uploads/a.csv")), settings, ecs)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert json.loads(record.getMessage())["reason"].startswith("AccessDeniedException")


def test_records_are_parked_untried_when_the_invocation_is_almost_out_of_time(
    settings: RunnerSettings,
) -> None:
    ecs = boto3.client("ecs", region_name="us-east-1")
    sqs = RecordingSqs()
    with Stubber(ecs):  # no RunTask call is expected
        summary = run_event(
            s3_event(s3_record("uploads/a.csv")),
            settings,
            services_for(ecs, sqs),
            remaining_ms=lambda: 900,
        )
    assert "not tried: under 26 s left" in summary["parked"]["uploads/a.csv"]
    assert sqs.parked_keys() == ["uploads/a.csv"]
