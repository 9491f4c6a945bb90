"""The fake's launch bucket and fault policy: what the fault-injection test relies on."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from tests.fakes.fake_ecs import FakeEcs, Fault, LaunchBucket, RunTaskCall, running_fake_ecs


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_task(fake: FakeEcs, token: str) -> tuple[int, dict[str, Any]]:
    return fake.handle("RunTask", {"cluster": "jobs", "count": 1, "clientToken": token})


def test_the_launch_bucket_allows_a_burst_of_100_then_20_launches_a_second() -> None:
    clock = Clock()
    fake = FakeEcs(launch_bucket=LaunchBucket(clock=clock))
    statuses = [run_task(fake, f"token-{n}")[0] for n in range(101)]
    assert statuses == [200] * 100 + [400]
    status, body = run_task(fake, "token-101")
    assert (status, body["__type"], body["message"]) == (
        400,
        "ThrottlingException",
        "Rate exceeded",
    )
    clock.now = 1.0
    statuses = [run_task(fake, f"later-{n}")[0] for n in range(21)]
    assert statuses == [200] * 20 + [400]
    assert len(fake.tasks) == 120
    assert sum(call.rate_limited for call in fake.calls) == 3


def test_a_repeated_token_gets_its_task_without_a_launch_token() -> None:
    clock = Clock()
    fake = FakeEcs(launch_bucket=LaunchBucket(burst=1, rate=1, clock=clock))
    first = run_task(fake, "same")
    again = run_task(fake, "same")
    assert first == again
    assert run_task(fake, "other")[0] == 400  # the one token went to the first launch only


def test_the_fault_policy_answers_calls_no_rule_matched_until_faults_are_cleared() -> None:
    asked: list[str | None] = []

    def policy(call: RunTaskCall) -> Fault | None:
        asked.append(call.client_token)
        return Fault.failure("RESOURCE:MEMORY")

    fake = FakeEcs(fault_policy=policy)
    fake.inject(Fault.throttling())
    assert run_task(fake, "a")[1]["__type"] == "ThrottlingException"  # the rule came first
    assert run_task(fake, "a")[1]["failures"][0]["reason"] == "RESOURCE:MEMORY"
    fake.clear_faults()
    assert run_task(fake, "a")[1]["tasks"]
    assert asked == ["a"]


def test_a_lost_answer_starts_the_task_and_the_client_sees_the_connection_closed() -> None:
    with running_fake_ecs() as fake:
        fake.inject(Fault.lost(), times=2)
        ecs = fake.client(Config(retries={"mode": "standard", "total_max_attempts": 2}))
        with pytest.raises(ConnectionClosedError):
            ecs.run_task(cluster="jobs", taskDefinition="job", clientToken="same")
        assert len(fake.tasks) == 1  # both tries reached ECS; the token started one task
        assert [call.fault for call in fake.calls] == [Fault.lost(), Fault.lost()]
        answer = ecs.run_task(cluster="jobs", taskDefinition="job", clientToken="same")
        assert [task["taskArn"] for task in answer["tasks"]] == [t["taskArn"] for t in fake.tasks]
