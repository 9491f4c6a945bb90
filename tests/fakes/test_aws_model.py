"""The virtual clock and the model of AWS that the proofs rely on, checked against AWS's rules
and, for the DynamoDB expressions the runner writes, against moto."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.fakes.aws_model import (
    DynamoModel,
    EcsModel,
    Queue,
    SimDynamoClient,
    SqsModel,
    TokenBucket,
    condition_holds,
)
from tests.fakes.simulated_pipeline import TABLE, Scenario, run_scenario, tally
from tests.fakes.virtual_clock import Simulation

# --- the clock ---------------------------------------------------------------------------------


def test_processes_interleave_in_simulated_time_whatever_order_they_were_spawned() -> None:
    sim = Simulation()
    seen: list[tuple[float, str]] = []

    def worker(name: str, step: float) -> None:
        for _ in range(3):
            sim.sleep(step)
            seen.append((sim.now, name))

    sim.spawn(worker, "slow", 3.0)
    sim.spawn(worker, "fast", 2.0)
    sim.run()
    assert seen == [
        (2.0, "fast"),
        (3.0, "slow"),
        (4.0, "fast"),
        (6.0, "slow"),  # a tie goes to the wake-up scheduled first (slow's, at t=3)
        (6.0, "fast"),
        (9.0, "slow"),
    ]


def test_a_killed_process_has_no_effect_after_the_kill_even_in_its_finally() -> None:
    sim = Simulation()
    effects: list[str] = []

    def worker() -> None:
        try:
            sim.sleep(10)
            effects.append("finished")
        finally:
            sim.sleep(1)  # an API call while unwinding: a stopped Lambda makes none
            effects.append("cleaned up")

    process = sim.spawn(worker)
    sim.call_at(5.0, lambda: sim.kill(process))
    sim.run()
    assert effects == []
    assert process.finished


def test_a_simulation_reads_no_wall_clock() -> None:
    sim = Simulation()
    sim.spawn(lambda: sim.sleep(86_400 * 365))
    sim.run()
    assert sim.now == 86_400 * 365


# --- ECS ---------------------------------------------------------------------------------------


def test_the_launch_bucket_allows_a_burst_of_100_then_20_a_second() -> None:
    sim = Simulation()
    bucket = TokenBucket(sim, burst=100, rate=20)
    assert sum(bucket.take() for _ in range(150)) == 100
    sim.call_at(1.0, lambda: None)
    sim.run()
    assert sum(bucket.take() for _ in range(50)) == 20


def run_task_request(key: str, token: str | None = "t") -> dict[str, Any]:
    request: dict[str, Any] = {
        "cluster": "jobs",
        "overrides": {
            "containerOverrides": [
                {"name": "job", "environment": [
                    {"name": "S3_BUCKET", "value": "b"}, {"name": "S3_KEY", "value": key}
                ]}
            ]
        },
    }  # fmt: skip
    if token:
        request["clientToken"] = token
    return request


def test_ecs_remembers_a_client_token_for_24_hours_only() -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 60.0)
    first = ecs.run_task(run_task_request("a"))
    assert ecs.run_task(run_task_request("a")) == first
    assert len(ecs.tasks) == 1
    sim.call_at(24 * 3600.0, lambda: None)
    sim.run()
    ecs.run_task(run_task_request("a"))
    assert len(ecs.tasks) == 2


def test_ecs_answers_the_same_token_with_other_parameters_with_a_conflict() -> None:
    ecs = EcsModel(Simulation(), duration=lambda _: 60.0)
    ecs.run_task(run_task_request("a"))
    with pytest.raises(Exception, match="ConflictException"):
        ecs.run_task(run_task_request("b"))


def test_beyond_the_account_limit_ecs_answers_with_a_failure_naming_the_vcpu_limit() -> None:
    ecs = EcsModel(Simulation(), duration=lambda _: 60.0, account_limit=2)
    for key in ("a", "b"):
        ecs.run_task(run_task_request(key, token=key))
    answer = ecs.run_task(run_task_request("c", token="c"))
    assert answer["tasks"] == []
    assert "limit on the number of vCPUs" in answer["failures"][0]["reason"]


def test_ecs_lists_a_new_task_only_after_its_listing_lag() -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 60.0, listing_lag=2.0)
    ecs.run_task(run_task_request("a"))
    assert ecs.list_tasks({})["taskArns"] == []
    sim.run(until=2.0)
    assert len(ecs.list_tasks({})["taskArns"]) == 1


# --- SQS ---------------------------------------------------------------------------------------


def test_a_message_is_moved_to_the_dead_letter_queue_beyond_its_most_receives() -> None:
    sim = Simulation()
    sqs = SqsModel(sim)
    dead = sqs.create(Queue("dlq"))
    queue = sqs.create(Queue("q", visibility_timeout=0, dead_letter=dead, max_receives=2))
    sqs.send(queue, "body")
    assert len(sqs.receive(queue, 10)) == 1
    assert len(sqs.receive(queue, 10)) == 1
    assert sqs.receive(queue, 10) == []
    assert [m.body for m in dead.messages.values()] == ["body"]


def test_a_message_past_its_retention_is_counted_as_expired_not_delivered() -> None:
    sim = Simulation()
    sqs = SqsModel(sim)
    queue = sqs.create(Queue("q", retention=60))
    sqs.send(queue, "body", delay=61)
    sim.call_at(61.0, lambda: None)
    sim.run()
    assert sqs.receive(queue, 10) == []
    assert len(queue.expired) == 1


# --- DynamoDB: the model agrees with moto on the runner's expressions ---------------------------


def runner_expressions() -> list[tuple[str, str, dict[str, Any]]]:
    """(update, condition, values) as task_cap writes them, in a sequence of turns."""
    from task_cap import ACQUIRE_CONDITION, ACQUIRE_UPDATE, RELEASE_CONDITION, RELEASE_UPDATE

    def acquire(me: str, now: float) -> tuple[str, str, dict[str, Any]]:
        values = {":me": {"S": me}, ":until": {"N": str(now + 90)}, ":now": {"N": str(now)}}
        return ACQUIRE_UPDATE, ACQUIRE_CONDITION, values

    def release(me: str) -> tuple[str, str, dict[str, Any]]:
        values = {":inflight": {"S": "{}"}, ":zero": {"N": "0"}, ":me": {"S": me}}
        return RELEASE_UPDATE, RELEASE_CONDITION, values

    return [
        acquire("a", 100),
        acquire("b", 110),  # a holds it
        release("b"),  # b does not
        release("a"),
        acquire("b", 120),
        acquire("a", 300),  # b's lease lapsed at 210
        release("b"),  # b lost it
        release("a"),
    ]


def outcomes_of(update_item: Any) -> list[bool]:
    done = []
    for update, condition, values in runner_expressions():
        try:
            update_item(
                TableName=TABLE,
                Key={"pk": {"S": "cap-lock"}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except Exception as error:  # the conditional check failing is the answer
            # Anything else would show as a True that moto and the model disagree on.
            done.append("ConditionalCheckFailed" not in str(error))
        else:
            done.append(True)
    return done


def test_the_models_conditional_updates_agree_with_moto(
    fake_aws_credentials: None,
) -> None:
    import tests.fakes.simulated_pipeline  # noqa: F401 - puts the runner's modules on the path

    sim = Simulation()
    model = SimDynamoClient(DynamoModel(sim), _no_retries(sim), _no_latency())
    sim.spawn(lambda: outcomes.append(outcomes_of(model.update_item)))
    outcomes: list[list[bool]] = []
    sim.run()
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        assert outcomes_of(dynamodb.update_item) == outcomes[0]
    assert outcomes[0] == [True, False, False, True, True, True, False, True]


def test_the_model_refuses_a_condition_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="does not understand"):
        condition_holds("size(inflight) > :n", {}, {":n": {"N": "1"}})


def _no_retries(sim: Simulation) -> Any:
    from tests.fakes.aws_model import BotocoreRetries

    return BotocoreRetries(sim, random.Random(0), max_attempts=1, read_timeout=1)


def _no_latency() -> Any:
    from tests.fakes.aws_model import Latency

    return Latency(dynamodb=0.0)


# --- a small world: the cap under concurrent invocations ----------------------------------------


def test_fifty_uploads_at_once_under_a_cap_of_five_start_one_task_each_never_six_at_once() -> None:
    outcome = run_scenario(
        Scenario(
            uploads=50,
            seed=3,
            arrival_window=5.0,
            duration=(30.0, 90.0),
            max_concurrent_tasks=5,
            transient_fault_rate=0.3,
            duplicate_rate=0.2,
        )
    )
    counted = tally(outcome)
    assert counted.with_one_task == 50
    assert counted.duplicated == counted.lost == []
    assert outcome.ecs.peak_in_flight == 5
    assert outcome.lambdas.stats.peak_concurrent > 5  # many invocations did take turns
