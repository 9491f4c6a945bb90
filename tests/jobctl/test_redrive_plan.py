"""What a redrive makes of each kind of queue message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobctl.redrive import UnreadableMessageError, plan
from jobctl.runner import REDRIVE_FIELD

S3_EVENT = {
    "Records": [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "uploads-bucket"}, "object": {"key": "uploads/a+b.csv"}},
        }
    ]
}


def message(body: Any, message_id: str = "m-1") -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"MessageId": message_id, "ReceiptHandle": f"r-{message_id}", "Body": text}


def test_a_dead_letter_record_replays_the_original_s3_event_unchanged() -> None:
    record = {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": S3_EVENT,
        "responsePayload": {"errorMessage": "RunTask failed for uploads/a b.csv: RESOURCE:MEMORY"},
    }
    replay = plan("dead-letter", message(record))
    assert replay.event == S3_EVENT
    assert REDRIVE_FIELD not in replay.event
    assert replay.keys == ("uploads/a b.csv",)
    assert replay.reason == "RetriesExhausted: RunTask failed for uploads/a b.csv: RESOURCE:MEMORY"


def failed_job(**overrides: Any) -> dict[str, Any]:
    body = {
        "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/jobs/0f1e2d",
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


def test_a_failed_job_becomes_an_s3_event_for_the_same_upload_encoded_as_s3_does() -> None:
    replay = plan("failed-jobs", message(failed_job()))
    (record,) = replay.event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == "uploads-bucket"
    assert record["s3"]["object"]["key"] == "uploads/rapport+%C3%A9t%C3%A9+2026.csv"
    assert record["s3"]["object"]["versionId"] == "v42"
    assert replay.keys == ("uploads/rapport été 2026.csv",)


def test_a_failed_job_asks_for_a_new_task_keyed_on_the_failed_one() -> None:
    first = plan("failed-jobs", message(failed_job(), "m-1"))
    again = plan("failed-jobs", message(failed_job(), "m-2"))
    assert first.event[REDRIVE_FIELD] == "arn:aws:ecs:us-east-1:123456789012:task/jobs/0f1e2d"
    assert first.event == again.event


def test_a_failed_job_names_its_reason_exit_code_and_log_stream() -> None:
    replay = plan("failed-jobs", message(failed_job()))
    assert replay.reason == (
        "EssentialContainerExited: Essential container in task exited (exit code 3)"
    )
    assert replay.log_stream == "job/job/0f1e2d"


@pytest.mark.parametrize(
    ("source", "body", "expected"),
    [
        ("dead-letter", "not json", "is not JSON"),
        ("dead-letter", [1, 2], "is not a JSON object"),
        ("dead-letter", {"requestPayload": {"no": "records"}}, "neither a Lambda on-failure"),
        ("dead-letter", {"Event": "s3:TestEvent"}, "nor an S3 event from the backlog"),
        ("failed-jobs", {"environment": []}, "names no S3_BUCKET and S3_KEY"),
    ],
)
def test_a_message_that_is_not_what_the_queue_holds_is_named_and_left_alone(
    source: str, body: Any, expected: str
) -> None:
    with pytest.raises(UnreadableMessageError, match=expected):
        plan(source, message(body))  # type: ignore[arg-type]


def test_a_dead_letter_from_the_backlog_replays_its_s3_event_with_the_runners_reason() -> None:
    event = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "uploads/a+b.csv"}}}]}
    replay = plan(
        "dead-letter",
        {
            "MessageId": "m-1",
            "ReceiptHandle": "r-1",
            "Body": json.dumps(event),
            "MessageAttributes": {
                "reason": {"DataType": "String", "StringValue": "InvalidParameterException: x"}
            },
        },
    )
    assert replay.event == event
    assert replay.keys == ("uploads/a b.csv",)
    assert replay.reason == "InvalidParameterException: x"


def test_a_dead_letter_sqs_moved_from_the_backlog_says_so() -> None:
    event = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "uploads/a.csv"}}}]}
    replay = plan(
        "dead-letter", {"MessageId": "m", "ReceiptHandle": "r", "Body": json.dumps(event)}
    )
    assert "moved from the backlog by SQS" in replay.reason
