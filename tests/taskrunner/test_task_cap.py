"""The task cap's bookkeeping: who starts, what counts, and a lost answer's kept place."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from outcomes import RecordResult
from runner_settings import RunnerSettings, load_settings
from services import Services
from task_cap import LOCK_KEY, TaskCap, upload_key
from upload_events import Upload

from tests.fakes.aws_model import (
    EPOCH,
    BotocoreRetries,
    DynamoModel,
    EcsModel,
    Latency,
    SimDynamoClient,
    SimEcsClient,
)
from tests.fakes.virtual_clock import Simulation
from tests.taskrunner.conftest import RUNNER_ENV

TABLE = "jobs-state"
UPLOAD = Upload("uploads-bucket", "uploads/a.csv", "ObjectCreated:Put", sequencer="0A")


class World:
    """A cap of 2 on the model of ECS and DynamoDB, driven by a virtual clock."""

    def __init__(self) -> None:
        self.sim = Simulation()
        self.ecs = EcsModel(self.sim, duration=lambda _: 600.0)
        self.dynamodb = DynamoModel(self.sim)
        retries = BotocoreRetries(self.sim, random.Random(1), max_attempts=1, read_timeout=10)
        self.settings: RunnerSettings = load_settings(
            {**RUNNER_ENV, "MAX_CONCURRENT_TASKS": "2", "STATE_TABLE": TABLE}
        )
        self.services = Services(
            SimEcsClient(self.ecs, retries, Latency()),  # type: ignore[arg-type]
            dynamodb=SimDynamoClient(self.dynamodb, retries, Latency()),  # type: ignore[arg-type]
            clock=lambda: EPOCH + self.sim.now,
            sleep=self.sim.sleep,
            rng=random.Random(2),
        )

    def reserve(self, key: str) -> None:
        """A place kept for an earlier lost answer of this upload."""
        entries = {key: ["", EPOCH + 3600]}
        self.dynamodb.put(TABLE, {"pk": {"S": LOCK_KEY}, "inflight": {"S": json.dumps(entries)}})

    def kept(self) -> dict[str, Any]:
        item = self.dynamodb.get(TABLE, {"pk": {"S": LOCK_KEY}}) or {}
        kept: dict[str, Any] = json.loads(item.get("inflight", {}).get("S", "{}"))
        return kept

    def start(self, start_one: Callable[[Upload], RecordResult]) -> RecordResult:
        found: list[RecordResult] = []

        def run() -> None:
            cap = TaskCap(self.settings, self.services)
            found.extend(cap.start([UPLOAD], [upload_key(UPLOAD)], start_one, None))

        self.sim.spawn(run)
        self.sim.run(until=60)
        (result,) = found
        return result


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (RecordResult("waiting", UPLOAD, reason="ThrottlingException"), True),
        (RecordResult("waiting", UPLOAD, reason="not tried: under 26 s left"), True),
        (RecordResult("waiting", UPLOAD, reason="RESOURCE:CPU", no_task=True), False),
        (RecordResult("failed", UPLOAD, reason="InvalidParameterException", no_task=True), False),
    ],
)
def test_a_lost_answers_place_is_kept_until_ecs_says_whether_its_task_exists(
    answer: RecordResult, kept: bool
) -> None:
    world = World()
    key = upload_key(UPLOAD)
    world.reserve(key)
    assert world.start(lambda _: answer) == answer
    assert (key in world.kept()) is kept


def test_a_kept_place_needs_no_free_one_and_becomes_its_task() -> None:
    world = World()
    key = upload_key(UPLOAD)
    world.reserve(key)
    for other in ("x", "y"):  # the cap of 2 is full without the reservation
        world.ecs.run_task(_request(other))
    world.sim.run(until=5)  # past ECS's listing lag
    result = world.start(lambda _: RecordResult("started", UPLOAD, task_arn="arn:task/mine"))
    assert result.outcome == "started"
    assert world.kept()[key][0] == "arn:task/mine"


def test_at_the_cap_an_upload_waits_its_turn_without_asking_ecs() -> None:
    world = World()
    for other in ("x", "y"):
        world.ecs.run_task(_request(other))
    world.sim.run(until=5)
    asked: list[Upload] = []

    def start_one(upload: Upload) -> RecordResult:
        asked.append(upload)
        return RecordResult("started", upload)

    result = world.start(start_one)
    assert (result.outcome, result.full, asked) == ("waiting", True, [])


def _request(key: str) -> dict[str, Any]:
    environment = [{"name": "S3_BUCKET", "value": "b"}, {"name": "S3_KEY", "value": key}]
    return {
        "clientToken": key,
        "overrides": {"containerOverrides": [{"name": "job", "environment": environment}]},
    }
