"""A job table that throttles or fails loses no upload and starts no second task."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from backlog import parked_body
from job_store import StoreError
from task_events import handle_task_event
from uploads import handle_backlog

from tests.taskrunner.conftest import World, s3_record


class FlakyDynamo:
    """moto's DynamoDB, with every `every`-th call throttled (after botocore's retries)."""

    def __init__(self, real: Any, every: int) -> None:
        self.real = real
        self.every = every
        self.calls = itertools.count(1)
        self.failed = 0

    def __getattr__(self, operation: str) -> Any:
        method = getattr(self.real, operation)

        def call(**request: Any) -> Any:
            if next(self.calls) % self.every == 0:
                from botocore.exceptions import ClientError

                self.failed += 1
                error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
                raise ClientError(error, operation)  # type: ignore[arg-type]
            return method(**request)

        return call


def use(world: World, dynamodb: Any) -> None:
    world.services._dynamodb = dynamodb
    world.services._stores.clear()


def backlog_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{number}",
                "receiptHandle": f"r-{number}",
                "body": parked_body(record, None),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
                "eventSource": "aws:sqs",
            }
            for number, record in enumerate(records)
        ]
    }


@pytest.mark.parametrize("every", [2, 3, 5])
def test_uploads_met_by_a_flaky_table_each_end_with_one_task(world: World, every: int) -> None:
    real = world.services.dynamodb
    records = [s3_record(f"uploads/{n}.csv", sequencer=f"{n:04d}") for n in range(12)]
    flaky = FlakyDynamo(real, every)
    use(world, flaky)
    unrecorded: list[dict[str, Any]] = []
    for record in records:
        try:
            summary = world.upload(record)
        except Exception:  # Lambda retries a failed event; here: its record waits
            unrecorded.append(record)
            continue
        if summary["parked"]:
            unrecorded.append(record)
    assert flaky.failed > 0
    # The table is back: the parked uploads come back from the backlog; the sweep finishes
    # claims whose writes failed (asking ECS again with the same token).
    use(world, real)
    if unrecorded:
        handle_backlog(backlog_batch(unrecorded), world.settings, world.services)
    world.later(120)
    world.sweep()
    world.sweep()
    started = world.ecs.started  # clientToken -> task: one entry per token that started
    keys = [str(call.s3_key) for call in world.ecs.calls if call.task_arn is not None]
    assert sorted(set(keys)) == sorted(f"uploads/{n}.csv" for n in range(12))
    per_upload = {
        key: {call.task_arn for call in world.ecs.calls if call.s3_key == key} for key in keys
    }
    assert all(len(arns) == 1 for arns in per_upload.values()), per_upload
    assert len(started) == 12
    for n in range(12):
        job = world.job(f"uploads/{n}.csv")
        assert job.state in ("starting", "running")
        assert job.current is not None
        assert job.current.task_arn is not None


def test_a_stop_met_by_a_failing_table_is_retried_and_settled_by_the_sweep_at_the_latest(
    world: World,
) -> None:
    (arn,) = world.upload(s3_record("uploads/a.csv"))["started"].values()
    world.ecs.finish(arn, exit_code=0)
    real = world.services.dynamodb
    use(world, FlakyDynamo(real, every=1))  # every call fails
    with pytest.raises(StoreError):  # Lambda retries the event, then the sweep settles it
        handle_task_event(world.ecs.state_change(arn), world.settings, world.services)
    use(world, real)
    world.sweep()
    assert world.job("uploads/a.csv").state == "succeeded"
    assert len(world.ecs.started) == 1
