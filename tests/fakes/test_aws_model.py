"""The virtual clock and the model of AWS that the proofs rely on, checked against AWS's rules
(the DynamoDB model is also held to moto's behaviour by tests/taskrunner/test_job_store.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.fakes.aws_model import (
    EPOCH,
    STOP_TIMEOUT_SECONDS,
    Behaviour,
    EcsModel,
    EventBus,
    Latency,
    Queue,
    SimDynamoClient,
    SqsModel,
    TokenBucket,
    iso,
    matches,
    wall,
)
from tests.fakes.dynamodb_model import DynamoModel, Index, Table
from tests.fakes.simulated_pipeline import Scenario, run_scenario, tally
from tests.fakes.virtual_clock import Simulation

# --- the clock ---------------------------------------------------------------------------------


def test_an_events_time_reads_as_the_datetime_boto3_gives_to_the_millisecond() -> None:
    rng = random.Random(7)
    moments = [rng.uniform(0, 40 * 86400) for _ in range(20_000)]
    # Near a second's end a datetime rounds to the microsecond, and the second with it.
    moments += [n + d for n in range(0, 90_000, 997) for d in (0.0, 0.9999994, 0.9999996, 0.0005)]
    for t in moments:
        milliseconds = int((EPOCH + t) * 1000) % 1000
        assert iso(t) == wall(t).strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds:03d}Z", t


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
        "taskDefinition": "arn:td/jobs-job:1",
        "capacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}],
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


# --- ECS: a task's life and its events ------------------------------------------------------------


def events_of(sim: Simulation, pattern: dict[str, Any] | None = None) -> tuple[EventBus, list[Any]]:
    """An event bus whose one rule (everything, unless `pattern`) records (time, event)."""
    bus = EventBus(sim, random.Random(0), delay=(1.0, 1.0), duplicate_rate=0.0)
    seen: list[Any] = []
    bus.rule(pattern or {"source": ["aws.ecs"]}, lambda event, at: seen.append((at, event)))
    return bus, seen


def test_a_task_is_pending_for_its_start_time_then_runs_then_stops_with_its_exit_code() -> None:
    sim = Simulation()
    bus, seen = events_of(sim)
    ecs = EcsModel(sim, duration=lambda _: 100.0, start_time=lambda _: 40.0, events=bus)
    arn = ecs.run_task(run_task_request("a"))["tasks"][0]["taskArn"]
    sim.run()
    task = ecs.by_arn[arn]
    assert (task.started_at, task.stopped_at, task.exit_code) == (40.0, 140.0, 0)
    statuses = [(event["detail"]["lastStatus"], event["detail"]["version"]) for _, event in seen]
    assert statuses == [("RUNNING", 2), ("STOPPED", 3)]
    assert [at for at, _ in seen] == [41.0, 141.0]  # EventBridge's delay


def test_a_pending_task_counts_against_the_account_limit() -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 100.0, start_time=lambda _: 40.0, account_limit=1)
    ecs.run_task(run_task_request("a", token="a"))
    refused = ecs.run_task(run_task_request("b", token="b"))
    assert "limit on the number of vCPUs" in refused["failures"][0]["reason"]


@pytest.mark.parametrize(
    ("behaviour", "provider", "stop_code", "exit_code"),
    [
        (Behaviour("exit-1"), "FARGATE", "EssentialContainerExited", 1),
        (Behaviour("spot", at=0.5), "FARGATE_SPOT", "SpotInterruption", 143),
        (Behaviour("spot", at=0.5), "FARGATE", "EssentialContainerExited", 0),  # not on Spot
        (Behaviour("pull-failure"), "FARGATE", "TaskFailedToStart", None),
    ],
)
def test_a_task_stops_as_its_behaviour_says(
    behaviour: Behaviour, provider: str, stop_code: str, exit_code: int | None
) -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 100.0, plan=lambda identity, attempt: behaviour)
    request = run_task_request("a")
    request["capacityProviderStrategy"] = [{"capacityProvider": provider, "weight": 1}]
    arn = ecs.run_task(request)["tasks"][0]["taskArn"]
    sim.run()
    task = ecs.by_arn[arn]
    assert (task.stop_code, task.exit_code) == (stop_code, exit_code)


def test_a_hung_task_runs_until_stop_task_then_is_killed_after_the_stop_timeout() -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 100.0, plan=lambda identity, attempt: Behaviour("hang"))
    arn = ecs.run_task(run_task_request("a"))["tasks"][0]["taskArn"]
    sim.call_at(10_000.0, lambda: None)
    sim.run()
    assert not ecs.by_arn[arn].stopped
    ecs.stop_task({"cluster": "jobs", "task": arn, "reason": "too long"})
    sim.run()
    task = ecs.by_arn[arn]
    assert (task.stop_code, task.stopped_reason, task.exit_code) == (
        "UserInitiated",
        "too long",
        137,
    )
    assert task.stopped_at == 10_000.0 + STOP_TIMEOUT_SECONDS


def test_ecs_describes_a_task_until_an_hour_after_it_stopped() -> None:
    sim = Simulation()
    ecs = EcsModel(sim, duration=lambda _: 100.0)
    arn = ecs.run_task(run_task_request("a"))["tasks"][0]["taskArn"]
    sim.run(until=500.0)
    (task,) = ecs.describe_tasks({"tasks": [arn]})["tasks"]
    assert task["lastStatus"] == "STOPPED"
    assert task["containers"][0]["exitCode"] == 0
    sim.call_at(100.0 + 3601.0, lambda: None)
    sim.run()
    assert ecs.describe_tasks({"tasks": [arn]})["failures"] == [{"arn": arn, "reason": "MISSING"}]


# --- EventBridge -------------------------------------------------------------------------------


def test_the_rule_pattern_matches_stopped_tasks_of_this_cluster_and_family_only() -> None:
    from infra.scheduling import task_stopped_pattern

    pattern = task_stopped_pattern("arn:c/jobs", "arn:td/jobs-job:")
    event: dict[str, Any] = {
        "source": "aws.ecs",
        "detail-type": "ECS Task State Change",
        "detail": {
            "clusterArn": "arn:c/jobs",
            "lastStatus": "STOPPED",
            "taskDefinitionArn": "arn:td/jobs-job:7",
        },
    }
    assert matches(pattern, event)
    for change in (
        {"clusterArn": "arn:c/other"},
        {"lastStatus": "RUNNING"},
        {"taskDefinitionArn": "arn:td/other:1"},
    ):
        assert not matches(pattern, {**event, "detail": {**event["detail"], **change}})


def test_events_come_late_sometimes_twice_and_none_during_an_outage() -> None:
    sim = Simulation()
    bus = EventBus(
        sim, random.Random(1), delay=(1.0, 10.0), duplicate_rate=0.5, outages=[(100.0, 200.0)]
    )
    seen: list[float] = []
    bus.rule({"source": ["x"]}, lambda event, at: seen.append(at))
    for when in (10.0, 150.0, 250.0):
        sim.call_at(when, lambda: bus.publish({"source": "x"}))
    sim.run()
    assert all(11.0 <= at <= 20.0 or 251.0 <= at <= 260.0 for at in seen)
    assert len(seen) > 2  # some delivered twice
    assert bus.dropped == 1


def test_the_schedule_fires_on_every_minute_until_its_end() -> None:
    sim = Simulation()
    bus = EventBus(sim, random.Random(0))
    fired: list[float] = []
    bus.schedule(60.0, lambda event, at: fired.append(at), until=300.0)
    sim.run()
    assert fired == [60.0, 120.0, 180.0, 240.0, 300.0]


# --- DynamoDB: what the runner relies on ---------------------------------------------------------


def test_transactions_on_one_item_that_overlap_in_time_conflict() -> None:
    sim = Simulation()
    model = DynamoModel(lambda: sim.now)
    model.create(Table("t"))
    client = SimDynamoClient(model, _no_retries(sim), Latency(dynamodb=0.01))
    update = {
        "Update": {
            "TableName": "t",
            "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}},
            "UpdateExpression": "ADD #n :one",
            "ExpressionAttributeNames": {"#n": "n"},
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }
    errors: list[str] = []

    def write() -> None:
        try:
            client.transact_write_items(TransactItems=[update])
        except Exception as error:
            errors.append(str(error))

    sim.spawn(write)
    sim.spawn(write)
    sim.run()
    assert len(errors) == 1
    assert "TransactionCanceledException" in errors[0]
    assert model.tables["t"].items[("a", "b")]["n"] == {"N": "1"}


def test_an_index_shows_a_change_only_after_its_lag_and_then_as_it_was_written() -> None:
    now = [0.0]
    model = DynamoModel(lambda: now[0], index_lag=0.5)
    model.create(Table("t", indexes={"i": Index("i", "h", "r")}))
    key = {"pk": {"S": "a"}, "sk": {"S": "b"}}
    model.put(
        {"TableName": "t", "Item": {**key, "h": {"S": "x"}, "r": {"N": "1"}, "v": {"S": "old"}}}
    )
    query = {
        "TableName": "t",
        "IndexName": "i",
        "KeyConditionExpression": "#h = :h",
        "ExpressionAttributeNames": {"#h": "h"},
        "ExpressionAttributeValues": {":h": {"S": "x"}},
    }
    assert model.query(query)["Items"] == []
    now[0] = 0.5
    (listed,) = model.query(query)["Items"]
    model.update(
        {
            "TableName": "t",
            "Key": key,
            "UpdateExpression": "SET #v = :new",
            "ExpressionAttributeNames": {"#v": "v"},
            "ExpressionAttributeValues": {":new": {"S": "new"}},
        }
    )
    (stale,) = model.query(query)["Items"]
    assert stale["v"] == {"S": "old"}  # eventually consistent
    now[0] = 1.0
    (fresh,) = model.query(query)["Items"]
    assert fresh["v"] == {"S": "new"}
    assert listed["v"] == {"S": "old"}


def test_the_model_refuses_an_expression_it_does_not_understand() -> None:
    from tests.fakes.dynamodb_model import DynamoError, parse_condition

    with pytest.raises(DynamoError, match="nested paths"):
        parse_condition("a.b = :x")


def _no_retries(sim: Simulation) -> Any:
    from tests.fakes.aws_model import BotocoreRetries

    return BotocoreRetries(sim, random.Random(0), max_attempts=1, read_timeout=1)


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
    assert counted.with_one_success == 50
    assert counted.duplicated == counted.lost == []
    assert outcome.ecs.peak_in_flight == 5
    assert outcome.lambdas.stats.peak_concurrent > 1  # invocations did contend for the slots
