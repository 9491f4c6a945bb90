"""What a redrive makes of each kind of queue message, as the runner and AWS write them."""

from __future__ import annotations

import json
from typing import Any

import job_record
import pytest
import reports
from runner_settings import load_settings

from jobctl.redrive import JobRef, UnreadableMessageError, plan
from jobctl.runner import REDRIVE_FIELD, SWEEP_EVENT

S3_EVENT = {
    "Records": [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "uploads-bucket"}, "object": {"key": "uploads/a+b.csv"}},
        }
    ]
}
SETTINGS = load_settings(
    {
        "CLUSTER_ARN": "arn:aws:ecs:us-east-1:123456789012:cluster/jobs",
        "TASK_DEFINITION_ARN": "arn:aws:ecs:us-east-1:123456789012:task-definition/job:1",
        "CONTAINER_NAME": "job",
        "SUBNETS": "subnet-0a1b2c3d",
        "SECURITY_GROUPS": "sg-0123abcd",
        "ASSIGN_PUBLIC_IP": "DISABLED",
        "CAPACITY_PROVIDER": "FARGATE_SPOT",
        "RESULT_PREFIX": "results/",
        "BACKLOG_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-backlog",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-dlq",
        "FAILED_JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-failed",
        "STATE_TABLE": "jobs-state",
        "MAX_CONCURRENT_TASKS": "0",
        "JOB_LOG_GROUP": "/jobs/job",
    }
)
TASK = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0f1e2d3c"


def message(body: Any, message_id: str = "m-1", **extra: Any) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"MessageId": message_id, "ReceiptHandle": f"r-{message_id}", "Body": text, **extra}


def uploaded(version_id: str | None = "v42") -> job_record.Job:
    return job_record.new_job(
        bucket="uploads-bucket",
        key="uploads/rapport été 2026.csv",
        job_id="0f" * 16,
        now=1000.0,
        version_id=version_id,
        uploaded_at="2026-12-06T10:00:00.000Z",
        size=12,
    )


def failed_job(*, attempts: int = 2, version_id: str | None = "v42") -> job_record.Job:
    """A job whose task was interrupted, then exited 6: its record, as the runner's
    transitions leave it."""
    job = uploaded(version_id)
    for number in range(1, attempts + 1):
        arn = f"{TASK}{number}"
        at = 1000.0 + 100 * number
        job = job_record.claim(job, now=at, default_provider="FARGATE_SPOT")
        job = job_record.task_started(job, number, arn)
        last = number == attempts
        stop = job_record.Stop(
            task_arn=arn,
            stop_code="EssentialContainerExited" if last else "SpotInterruption",
            stopped_reason="Essential container in task exited",
            exit_code=6 if last else 143,
            container_reason=None,
            started_at=at + 1,
            stopped_at=at + 10,
        )
        after = (
            job_record.Next("failed", "job-failure", "job-failure: exit code 6")
            if last
            else job_record.Next("retry", "spot-interruption", "spot-interruption")
        )
        job = job_record.stopped(job, number, stop, after, now=at + 10)
    return job


def test_the_runners_failed_job_report_names_its_job_attempts_and_redrive() -> None:
    job = failed_job()
    replay = plan("failed-jobs", message(reports.failed_job_message(job, SETTINGS)))
    assert replay.job == JobRef("uploads-bucket", "uploads/rapport été 2026.csv", "0f" * 16)
    assert replay.redrive_of == reports.redrive_of(job)
    assert replay.attempts == 2
    assert replay.reason == "job-failure: exit code 6"
    assert replay.log_stream == "job/job/0f1e2d3c2"
    # Should the record be gone (expired), the upload itself is replayed, asking for a redrive.
    (record,) = replay.event["Records"]
    assert record["s3"]["object"]["key"] == "uploads/rapport+%C3%A9t%C3%A9+2026.csv"
    assert record["s3"]["object"]["versionId"] == "v42"
    assert replay.event[REDRIVE_FIELD] == reports.redrive_of(job)


def test_an_unversioned_upload_replayed_twice_names_the_same_upload() -> None:
    body = reports.failed_job_message(failed_job(version_id=None), SETTINGS)
    first = plan("failed-jobs", message(body, "m-1"))
    again = plan("failed-jobs", message(body, "m-2"))
    # The runner tells unversioned uploads apart by their sequencer: the same for both.
    assert first.event == again.event
    assert first.event["Records"][0]["s3"]["object"]["sequencer"]


def eventbridge_failed_job(**overrides: Any) -> dict[str, Any]:
    """A failed-jobs message as EventBridge's rule wrote it before the runner reported."""
    body = {
        "taskArn": TASK,
        "stopCode": "EssentialContainerExited",
        "stoppedReason": "Essential container in task exited",
        "exitCode": "3",
        "environment": [
            {"name": "S3_BUCKET", "value": "uploads-bucket"},
            {"name": "S3_KEY", "value": "uploads/rapport été 2026.csv"},
            {"name": "S3_VERSION_ID", "value": "v42"},
        ],
        "logStream": "job/job/{task id}",
    }
    body.update(overrides)
    return body


def test_an_older_failed_job_message_is_keyed_on_its_failed_task() -> None:
    first = plan("failed-jobs", message(eventbridge_failed_job(), "m-1"))
    again = plan("failed-jobs", message(eventbridge_failed_job(), "m-2"))
    assert first.redrive_of == TASK
    assert first.event == again.event
    assert first.job is None  # it names no job: the upload is replayed
    assert first.reason == (
        "EssentialContainerExited: Essential container in task exited (exit code 3)"
    )
    assert first.log_stream == "job/job/0f1e2d3c"


def test_an_older_message_of_a_task_the_new_runner_started_names_its_job() -> None:
    body = eventbridge_failed_job()
    body["environment"].append({"name": "JOB_ID", "value": "ab" * 16})
    assert plan("failed-jobs", message(body)).job == JobRef(
        "uploads-bucket", "uploads/rapport été 2026.csv", "ab" * 16
    )


def test_the_runners_dead_letter_names_the_job_that_never_ran_and_why() -> None:
    job = job_record.failed(uploaded(), now=2000.0, reason="ECS refused to start it: AccessDenied")
    attributes = {"reason": {"DataType": "String", "StringValue": job.reason}}
    replay = plan("dead-letter", message(reports.replay_event(job), MessageAttributes=attributes))
    assert replay.kind == "upload"
    assert replay.job == JobRef(job.bucket, job.key, job.job_id)
    assert replay.redrive_of == reports.redrive_of(job)
    assert replay.reason == "ECS refused to start it: AccessDenied"
    assert replay.keys == ("uploads/rapport été 2026.csv",)


def test_a_dead_letter_sqs_moved_from_the_backlog_says_so() -> None:
    replay = plan("dead-letter", message(S3_EVENT))
    assert "moved from the backlog by SQS" in replay.reason
    assert replay.job is None
    assert replay.keys == ("uploads/a b.csv",)


def lambda_failure(payload: Any) -> dict[str, Any]:
    return {
        "version": "1.0",
        "requestContext": {
            "requestId": "7f8e9d",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": payload,
        "responsePayload": {
            "errorMessage": "1 of 1 records got no job: uploads/a b.csv: throttled"
        },
    }


def test_lambdas_record_of_a_failed_upload_replays_it_once_per_failure() -> None:
    replay = plan("dead-letter", message(lambda_failure(S3_EVENT)))
    assert replay.kind == "upload"
    assert replay.event["Records"] == S3_EVENT["Records"]
    assert replay.event[REDRIVE_FIELD] == "lambda:7f8e9d"
    assert replay.keys == ("uploads/a b.csv",)
    assert (
        replay.reason == "RetriesExhausted: 1 of 1 records got no job: uploads/a b.csv: throttled"
    )


def test_lambdas_record_of_a_task_stop_replays_the_event_for_its_upload() -> None:
    event = {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {
            "taskArn": TASK,
            "lastStatus": "STOPPED",
            "overrides": {
                "containerOverrides": [
                    {"name": "job", "environment": [{"name": "S3_KEY", "value": "uploads/x.csv"}]}
                ]
            },
        },
    }
    replay = plan("dead-letter", message(lambda_failure(event)))
    assert (replay.kind, replay.keys, replay.event) == ("task-stop", ("uploads/x.csv",), event)


def test_lambdas_record_of_a_failed_sweep_runs_the_sweep() -> None:
    replay = plan("dead-letter", message(lambda_failure(dict(SWEEP_EVENT))))
    assert replay.kind == "sweep"
    assert replay.keys == ()


@pytest.mark.parametrize(
    ("source", "body", "expected"),
    [
        ("dead-letter", "not json", "is not JSON"),
        ("dead-letter", [1, 2], "is not a JSON object"),
        ("dead-letter", {"requestPayload": {"no": "records"}}, "neither S3's, an ECS task"),
        ("dead-letter", {"Event": "s3:TestEvent"}, "nor an S3 event from the runner"),
        ("failed-jobs", {"environment": []}, "names no upload"),
    ],
)
def test_a_message_that_is_not_what_the_queue_holds_is_named_and_left_alone(
    source: str, body: Any, expected: str
) -> None:
    with pytest.raises(UnreadableMessageError, match=expected):
        plan(source, message(body))  # type: ignore[arg-type]
