"""The RunTask request for one attempt of a job, and what ECS's answer means (pure functions)."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber
from job_record import Attempt, Job, claim, new_job
from runner_settings import RunnerSettings
from task_starter import STARTED_BY, build_run_task_request, client_token, run_task
from upload_events import Upload
from uploads import skip_reason

from tests.taskrunner.conftest import BUCKET, World, s3_record

JOB = new_job(bucket=BUCKET, key="uploads/a b+c.csv", job_id="ab" * 16, now=100.0)


def attempt_of(job: Job, provider: str = "FARGATE_SPOT") -> tuple[Job, Attempt]:
    claimed = claim(job, now=101.0, default_provider=provider)
    assert claimed.current is not None
    return claimed, claimed.current


def environment(request: Any) -> dict[str, str]:
    (override,) = request["overrides"]["containerOverrides"]
    return {pair["name"]: pair["value"] for pair in override["environment"]}


def test_the_request_carries_the_upload_its_job_and_the_settings(settings: RunnerSettings) -> None:
    job, attempt = attempt_of(JOB)
    request = build_run_task_request(job, attempt, settings)
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
    assert environment(request) == {
        "S3_BUCKET": BUCKET,
        "S3_KEY": "uploads/a b+c.csv",
        "JOB_ID": "ab" * 16,
        "JOB_ATTEMPT": "1",
        "JOB_CLAIM": "1",
    }
    assert request["propagateTags"] == "TASK_DEFINITION"
    assert request["clientToken"] == client_token(job, attempt)


def test_the_attempt_decides_the_capacity_provider(settings: RunnerSettings) -> None:
    job, attempt = attempt_of(JOB.__class__(**{**JOB.__dict__, "next_provider": "FARGATE"}))
    strategy = build_run_task_request(job, attempt, settings)["capacityProviderStrategy"]
    assert strategy == [{"capacityProvider": "FARGATE", "weight": 1}]


def test_started_by_marks_the_system_within_36_allowed_characters(settings: RunnerSettings) -> None:
    job, attempt = attempt_of(JOB)
    started_by = build_run_task_request(job, attempt, settings)["startedBy"]
    assert started_by == STARTED_BY
    assert len(started_by) <= 36
    assert all(char.isalnum() or char in "-_/" for char in started_by)


def test_the_version_is_passed_when_the_upload_has_one(settings: RunnerSettings) -> None:
    job, attempt = attempt_of(JOB.__class__(**{**JOB.__dict__, "version_id": "v1"}))
    assert environment(build_run_task_request(job, attempt, settings))["S3_VERSION_ID"] == "v1"


def test_one_claim_keeps_its_token_and_every_claim_gets_a_new_one(settings: RunnerSettings) -> None:
    job, attempt = attempt_of(JOB)
    token = client_token(job, attempt)
    assert token == client_token(job, attempt)
    assert len(token) == 64
    assert all(33 <= ord(char) <= 126 for char in token)
    from job_record import not_started

    again, second = attempt_of(not_started(job, 1, now=102.0, reason="capacity"))
    assert second.number == attempt.number
    assert client_token(again, second) != token


@pytest.mark.parametrize(
    "event_name",
    [
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    ],
)
def test_every_kind_of_creation_gets_a_job(event_name: str, settings: RunnerSettings) -> None:
    assert skip_reason(Upload(BUCKET, "uploads/k", event_name), settings) is None


def test_a_removal_is_skipped_as_not_an_upload(settings: RunnerSettings) -> None:
    reason = skip_reason(Upload(BUCKET, "uploads/k", "ObjectRemoved:Delete"), settings)
    assert reason is not None
    assert "not an upload" in reason


def test_a_key_under_the_result_prefix_is_skipped_saying_why(settings: RunnerSettings) -> None:
    reason = skip_reason(Upload(BUCKET, "results/uploads/k.json", "ObjectCreated:Put"), settings)
    assert reason is not None
    assert "RESULT_PREFIX 'results/'" in reason


def answer(settings: RunnerSettings, respond: Any) -> Any:
    ecs = boto3.client("ecs", region_name="us-east-1")
    job, attempt = attempt_of(JOB)
    with Stubber(ecs) as stubber:
        respond(stubber, build_run_task_request(job, attempt, settings))
        return run_task(ecs, build_run_task_request(job, attempt, settings))


def failures(reason: str, detail: str = "") -> Any:
    failure = {"reason": reason, **({"detail": detail} if detail else {})}
    return lambda stubber, request: stubber.add_response(
        "run_task", {"tasks": [], "failures": [failure]}, request
    )


def error(code: str, message: str, *, status: int = 400, retries: int = 0, **fields: Any) -> Any:
    """An error answer after `retries` retries by botocore (its RetryAttempts)."""
    return lambda stubber, request: stubber.add_client_error(
        "run_task",
        code,
        message,
        http_status_code=status,
        response_meta={"RetryAttempts": retries},
        modeled_fields=fields or None,
    )


def test_a_capacity_shortage_means_not_now_naming_its_reason(settings: RunnerSettings) -> None:
    said = answer(settings, failures("RESOURCE:MEMORY", "no capacity"))
    assert (said.answer, said.waits) == ("not-now", True)
    assert said.reason == "RunTask failures: RESOURCE:MEMORY (no capacity)"


@pytest.mark.parametrize(
    "respond",
    [
        failures("You've reached the limit on the number of vCPUs you can run concurrently"),
        error("ClientException", "You've reached the limit on the number of tasks you can run"),
    ],
)
def test_the_accounts_quota_in_the_answer_or_as_an_error_means_the_account_is_full(
    settings: RunnerSettings, respond: Any
) -> None:
    assert answer(settings, respond).answer == "quota"


def test_any_other_failure_cannot_be_mended_by_waiting(settings: RunnerSettings) -> None:
    said = answer(settings, failures("MISSING"))
    assert (said.answer, said.reason) == ("rejected", "RunTask failures: MISSING")


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "InvalidParameterException", "ClusterNotFoundException"]
)
def test_a_request_ecs_rejects_cannot_be_mended_by_waiting(
    code: str, settings: RunnerSettings
) -> None:
    said = answer(settings, error(code, "rejected"))
    assert said.answer == "rejected"
    assert said.reason.startswith(f"{code}: rejected")


def test_throttling_at_the_first_attempt_means_not_now(settings: RunnerSettings) -> None:
    assert answer(settings, error("ThrottlingException", "Rate exceeded")).answer == "not-now"


@pytest.mark.parametrize(
    "respond",
    [
        # botocore retries timeouts too: the attempt before the throttled one may have started it.
        error("ThrottlingException", "Rate exceeded", retries=1),
        error("ServerException", "boom", status=500),
        error("ServiceUnavailableException", "try later", status=503, retries=3),
    ],
)
def test_throttling_after_a_retry_or_a_server_error_is_an_answer_lost_not_a_not_now(
    settings: RunnerSettings, respond: Any
) -> None:
    said = answer(settings, respond)
    assert (said.answer, said.waits) == ("lost", False)
    assert "asked again with its token" in said.reason


def test_a_conflict_names_the_task_this_token_already_started(settings: RunnerSettings) -> None:
    existing = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123"
    said = answer(settings, error("ConflictException", "token in use", resourceIds=[existing]))
    assert (said.answer, said.task_arn) == ("started", existing)


def test_no_answer_at_all_is_lost_not_failed(settings: RunnerSettings) -> None:
    class Silent:
        def run_task(self, **request: Any) -> Any:
            raise ReadTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com/")

    job, attempt = attempt_of(JOB)
    said = run_task(Silent(), build_run_task_request(job, attempt, settings))  # type: ignore[arg-type]
    assert said.answer == "lost"
    assert "ReadTimeoutError" in said.reason


def test_every_record_is_logged_as_one_json_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="taskrunner"):
        world.upload(s3_record("uploads/a.csv"), s3_record("results/a.csv.json"))
    lines = [
        json.loads(record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith('{"record"')
    ]
    assert lines[0]["outcome"] == "recorded"
    assert (lines[0]["key"], lines[0]["state"]) == ("uploads/a.csv", "waiting")
    assert lines[1]["outcome"] == "skipped"
    assert "RESULT_PREFIX" in lines[1]["reason"]
