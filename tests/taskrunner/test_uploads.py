"""Uploads come in: each gets one job record and, while slots are free, its task at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from uploads import MalformedRecordsError, TasksNotStartedError

from tests.fakes.fake_ecs import Fault
from tests.taskrunner.conftest import BUCKET, World, s3_record


class FailingDynamo:
    """A DynamoDB client whose every call fails as a throttled or unavailable table does."""

    def __init__(self, code: str = "ProvisionedThroughputExceededException") -> None:
        self.code = code

    def __getattr__(self, operation: str) -> Any:
        def fail(**request: Any) -> Any:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": self.code, "Message": "injected"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]

        return fail


def test_an_upload_is_recorded_and_its_task_started_with_its_job_named(world: World) -> None:
    summary = world.upload(s3_record("uploads/report.csv", version_id="v1"))
    (arn,) = summary["started"].values()
    job = world.job("uploads/report.csv")
    assert (job.state, job.version_id, job.attempt_count) == ("starting", "v1", 1)
    assert job.current is not None
    assert job.current.task_arn == arn
    (call,) = world.ecs.calls
    assert call.environment == {
        "S3_BUCKET": "uploads-bucket",
        "S3_KEY": "uploads/report.csv",
        "S3_VERSION_ID": "v1",
        "JOB_ID": job.job_id,
        "JOB_ATTEMPT": "1",
        "JOB_CLAIM": "1",
    }
    json.dumps(summary)  # what Lambda returns must serialise


def test_a_duplicate_delivery_lands_on_the_same_record_and_starts_nothing(world: World) -> None:
    record = s3_record("uploads/report.csv")
    world.upload(record)
    again = world.upload(record)
    assert again["started"] == {}
    assert "uploads/report.csv" in again["skipped"]
    assert len(world.ecs.calls) == 1
    assert world.job("uploads/report.csv").attempt_count == 1


def test_a_new_upload_of_the_same_key_is_a_new_job(world: World) -> None:
    world.upload(s3_record("uploads/report.csv", sequencer="01"))
    world.upload(s3_record("uploads/report.csv", sequencer="02"))
    jobs = world.store.jobs_of("uploads-bucket", "uploads/report.csv")
    assert len({job.job_id for job in jobs}) == 2
    assert len(world.ecs.started) == 2


def test_removals_results_and_the_test_event_get_no_job(world: World) -> None:
    summary = world.upload(
        s3_record("uploads/gone.csv", event_name="ObjectRemoved:Delete"),
        s3_record("results/uploads/a.csv.json"),
    )
    assert set(summary["skipped"]) == {"uploads/gone.csv", "results/uploads/a.csv.json"}
    assert world.store.jobs_of("uploads-bucket", "uploads/gone.csv") == []
    from uploads import handle_uploads

    assert (
        handle_uploads({"Event": "s3:TestEvent"}, world.settings, world.services)["started"] == {}
    )
    assert world.ecs.calls == []


def test_a_malformed_record_is_named_and_the_good_ones_still_get_their_jobs(world: World) -> None:
    with pytest.raises(MalformedRecordsError, match="malformed record 1") as raised:
        world.upload(s3_record("uploads/a.csv"), {"eventSource": "aws:s3"})
    assert list(raised.value.summary["started"]) == ["uploads/a.csv"]
    assert world.job("uploads/a.csv").state == "starting"


def test_with_every_slot_taken_an_upload_waits_for_one_in_the_job_table(world: World) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    capped.upload(s3_record("uploads/first.csv"))
    summary = capped.upload(s3_record("uploads/second.csv"))
    assert summary["started"] == {}
    assert "waits for a slot" in summary["waiting"]["uploads/second.csv"]
    assert capped.job("uploads/second.csv").state == "waiting"
    assert len(world.ecs.calls) == 1  # ECS was not asked: the slots said no


def test_a_job_table_that_fails_parks_the_upload_in_the_backlog_to_be_recorded_later(
    world: World,
) -> None:
    record = s3_record("uploads/report.csv")
    healthy = world.services.dynamodb
    world.services._dynamodb = FailingDynamo()  # type: ignore[assignment]
    world.services._stores.clear()
    summary = world.upload(record)
    assert "backlog" in summary["parked"]["uploads/report.csv"]
    assert world.ecs.calls == []
    import boto3
    from backlog import parked_body

    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=world.env["BACKLOG_QUEUE_URL"], AttributeNames=["All"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # it comes back in a while
    # The table is back: the backlog's batch (the parked record) records the job, which starts.
    world.services._dynamodb = healthy
    world.services._stores.clear()
    from uploads import handle_backlog

    batch = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": parked_body(record, None),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "eventSource": "aws:sqs",
            }
        ]
    }
    assert handle_backlog(batch, world.settings, world.services) == {"batchItemFailures": []}
    assert world.job("uploads/report.csv").state == "starting"
    assert len(world.ecs.started) == 1


def test_an_upload_neither_the_table_nor_the_backlog_takes_raises_naming_both(
    world: World,
) -> None:
    world.services._dynamodb = FailingDynamo()  # type: ignore[assignment]
    world.services._stores.clear()
    world.settings = world.settings.__class__(
        **{**world.settings.__dict__, "backlog_queue_url": world.env["BACKLOG_QUEUE_URL"] + "-gone"}
    )
    with pytest.raises(TasksNotStartedError) as raised:
        world.upload(s3_record("uploads/report.csv"))
    (reason,) = raised.value.failures.values()
    assert "ProvisionedThroughputExceeded" in reason
    assert "parking it in the backlog failed" in reason


def test_a_capacity_shortage_leaves_the_job_waiting_in_its_place(world: World) -> None:
    world.ecs.inject(Fault.failure("Capacity is unavailable at this time"), times=1)
    summary = world.upload(s3_record("uploads/report.csv"))
    assert summary["started"] == {}
    job = world.job("uploads/report.csv")
    assert (job.state, job.attempt_count, job.ready_at) == ("waiting", 0, job.recorded_at)
    assert world.store.slots().active == 0


def test_a_redrive_makes_a_failed_job_wait_again_once(world: World) -> None:
    record = s3_record("uploads/report.csv")
    world.upload(record)
    (arn,) = world.ecs.started.values()
    world.stopped(arn, exit_code=1)
    failed = world.job("uploads/report.csv")
    assert failed.state == "failed"
    (message,) = world.messages("FAILED_JOBS_QUEUE_URL")
    redrive_of = json.loads(message["Body"])["redriveOf"]
    world.upload(record, redriveOf=redrive_of)
    world.upload(record, redriveOf=redrive_of)  # the same message replayed
    again = world.job("uploads/report.csv")
    assert (again.redrives, again.attempt_count, again.state) == (1, 2, "starting")
    assert len(world.ecs.started) == 2


def test_a_redrive_finds_the_job_its_report_names_even_if_the_event_lost_the_upload_identity(
    world: World,
) -> None:
    world.upload(s3_record("uploads/report.csv"))
    (arn,) = world.ecs.started.values()
    world.stopped(arn, exit_code=1)
    (message,) = world.messages("FAILED_JOBS_QUEUE_URL")
    redrive_of = json.loads(message["Body"])["redriveOf"]
    # A replay built from the report alone: another sequencer, so another job id by the event.
    replayed = s3_record("uploads/report.csv", sequencer="00FFFFFFFFFFFFFFFF")
    world.upload(replayed, redriveOf=redrive_of)
    (job,) = world.store.jobs_of(BUCKET, "uploads/report.csv")
    assert (job.redrives, job.attempt_count, job.state) == (1, 2, "starting")
    assert job.last_redrive_of == redrive_of
