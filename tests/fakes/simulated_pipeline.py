"""The runner's real code on a model of AWS and a virtual clock: uploads in, tasks out.

`run_scenario` builds the world of `aws_model` (ECS, the backlog and dead-letter queues, the cap's
table, Lambda invoked by S3 and by the backlog's event source mapping), delivers the planned
S3 events at their simulated times, and runs until every upload has settled: a task started, or
a message in the dead-letter queue, with nothing in flight. The runner decides everything:
event parsing, tokens, parking, delays, the cap; its settings are read from the environment
the infrastructure gives the Lambda (`load_settings`), its clients are the model's.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from tests.fakes.aws_model import (
    EPOCH,
    BotocoreRetries,
    DynamoModel,
    EcsModel,
    Fault,
    Identity,
    LambdaModel,
    Latency,
    Queue,
    SimDynamoClient,
    SimEcsClient,
    SimSqsClient,
    SqsModel,
)
from tests.fakes.virtual_clock import Simulation

TASKRUNNER_DIR = Path(__file__).resolve().parents[2] / "taskrunner"
if str(TASKRUNNER_DIR) not in sys.path:  # the Lambda package's modules are top-level
    sys.path.insert(0, str(TASKRUNNER_DIR))

from backlog import MAX_RECEIVES  # noqa: E402 - found through the path above
from dispatch import process_event  # noqa: E402
from runner_settings import RunnerSettings, load_settings  # noqa: E402
from services import MAX_ATTEMPTS, READ_TIMEOUT_SECONDS, Services  # noqa: E402

FUNCTION_TIMEOUT_SECONDS = 120.0  # infra/runner.py
BACKLOG_VISIBILITY_SECONDS = 6 * FUNCTION_TIMEOUT_SECONDS  # AWS's advice for a mapped queue
CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/jobs"
TABLE = "jobs-state"
NAMES = (
    "report.csv",
    "quarterly report 2026.csv",
    "a+b=c.csv",
    "100% done.csv",
    "café/naïve résumé.pdf",
    "📈 growth 🚀.xlsx",
    "~tilde!(paren)*star'quote.txt",
    "data/2026/11/28/part-00001.parquet",
)
BUCKETS = ("uploads-bucket", "media-uploads")


@dataclass(frozen=True)
class Upload:
    """One object created in S3, the event S3 sends for it, and what goes wrong for it."""

    identity: Identity
    event: dict[str, Any]
    deliveries: tuple[float, ...]  # simulated times S3 delivers the event (twice: a duplicate)
    faults: tuple[Fault, ...] = ()  # what its first RunTask calls get instead


@dataclass(frozen=True)
class Scenario:
    uploads: int
    seed: int
    arrival_window: float = 600.0
    duration: tuple[float, float] = (60.0, 600.0)
    account_limit: int = 100
    max_concurrent_tasks: int = 0
    transient_fault_rate: float = 0.05
    duplicate_rate: float = 0.02
    duplicate_lag: tuple[float, float] = (0.0, 300.0)
    rejected_rate: float = 0.0  # uploads whose RunTask ECS rejects three times: dead letters
    maximum_concurrency: int = 2  # the event source mapping's, as infra/runner.py sets it
    batch_size: int = 100  # ditto
    batching_window: float = 10.0  # ditto
    horizon: float = 14 * 24 * 3600.0  # the run stops here whatever happens


@dataclass
class Outcome:
    scenario: Scenario
    uploads: list[Upload]
    sim: Simulation
    ecs: EcsModel
    sqs: SqsModel
    dynamodb: DynamoModel
    lambdas: LambdaModel
    backlog: Queue
    dead_letter: Queue
    retries: BotocoreRetries
    settings: RunnerSettings
    services: Services
    settled_at: float = 0.0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # t, backlog, in flight
    replay_failures: list[str] = field(default_factory=list)

    @property
    def tasks_by_upload(self) -> dict[Identity, list[Any]]:
        return self.ecs.tasks_by_upload()

    def dead_letters_by_upload(self) -> Counter[Identity]:
        """Upload -> messages in the dead-letter queue naming it (any of the three shapes)."""
        found: Counter[Identity] = Counter()
        for message in self.dead_letter.messages.values():
            body = json.loads(message.body)
            event = body.get("requestPayload", body)
            for record in event["Records"]:
                from upload_events import parse_record

                upload = parse_record(record)
                found[(upload.bucket, upload.key, upload.version_id)] += 1
        return found


@dataclass(frozen=True)
class Tally:
    """What happened to the planned uploads, for the assertions and the report."""

    tasks: int
    with_one_task: int
    duplicated: list[Identity]
    unknown: list[Identity]  # tasks for uploads never made (a key decoding bug)
    dead_lettered: Counter[Identity]
    lost: list[Identity]  # neither a task nor a dead letter
    expired: int  # messages SQS dropped at the end of their retention

    @property
    def not_exactly_one(self) -> list[Identity]:
        return self.duplicated + self.lost


def tally(outcome: Outcome) -> Tally:
    planned = {upload.identity for upload in outcome.uploads}
    tasks = outcome.tasks_by_upload
    dead = outcome.dead_letters_by_upload()
    duplicated = sorted((u for u in planned if len(tasks.get(u, ())) + dead[u] > 1), key=str)
    return Tally(
        tasks=len(outcome.ecs.tasks),
        with_one_task=sum(1 for u in planned if len(tasks.get(u, ())) == 1),
        duplicated=duplicated,
        unknown=sorted(set(tasks) - planned, key=str),
        dead_lettered=dead,
        lost=sorted((u for u in planned if not tasks.get(u) and not dead[u]), key=str),
        expired=sum(len(queue.expired) for queue in outcome.sqs.queues.values()),
    )


def s3_event(bucket: str, key: str, version_id: str | None, number: int) -> dict[str, Any]:
    """An ObjectCreated event as S3 sends it: one record, the key form-encoded."""
    s3_object: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": 1024 + number,
        "eTag": f"{number:032x}",
        "sequencer": f"00{number:014X}",
    }
    if version_id is not None:
        s3_object["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": f"2026-11-28T14:{number // 60 % 60:02d}:{number % 60:02d}.000Z",
                "eventName": ("ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload")[
                    number % 2
                ],
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "runner-trigger",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": s3_object,
                },
            }
        ]
    }


def plan_uploads(scenario: Scenario, rng: random.Random) -> list[Upload]:
    """The uploads, their arrival times, their duplicates and their faults, from the seed."""
    uploads = []
    for number in range(scenario.uploads):
        bucket = BUCKETS[number % len(BUCKETS)]
        key = f"uploads/{number:05d}/{rng.choice(NAMES)}"
        version_id = (
            "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789.", k=32))
            if rng.random() < 0.5
            else None
        )
        arrival = rng.uniform(0, scenario.arrival_window)
        deliveries: tuple[float, ...] = (arrival,)
        if rng.random() < scenario.duplicate_rate:
            deliveries = (arrival, arrival + rng.uniform(*scenario.duplicate_lag))
        faults: tuple[Fault, ...] = ()
        draw = rng.random()
        if draw < scenario.rejected_rate:
            # Every try of the direct path is rejected: one dead letter (so never a duplicate,
            # whose every delivery would dead-letter on its own).
            faults = (Fault.rejected(),) * 3
            deliveries = (arrival,)
        elif draw < scenario.rejected_rate + scenario.transient_fault_rate:
            kind = rng.choice(("throttling", "capacity", "lost-answer"))
            if kind == "throttling":
                faults = (Fault.throttling(),) * rng.randint(1, 2 * MAX_ATTEMPTS)
            elif kind == "capacity":
                faults = (Fault.capacity(),) * rng.randint(1, 3)
            else:
                faults = (Fault.lost_answer(),) * rng.choice((1, 1, MAX_ATTEMPTS))
        event = s3_event(bucket, key, version_id, number)
        uploads.append(Upload((bucket, key, version_id), event, deliveries, faults))
    return uploads


def runner_environment(scenario: Scenario, backlog: Queue, dead_letter: Queue) -> dict[str, str]:
    """What infra/runner.py puts in the Lambda's environment (network ids made up)."""
    env = {
        "CLUSTER_ARN": CLUSTER_ARN,
        "TASK_DEFINITION_ARN": "arn:aws:ecs:us-east-1:123456789012:task-definition/jobs-job:1",
        "CONTAINER_NAME": "job",
        "SUBNETS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
        "SECURITY_GROUPS": "sg-0123abcd",
        "ASSIGN_PUBLIC_IP": "DISABLED",
        "CAPACITY_PROVIDER": "FARGATE",
        "RESULT_PREFIX": "results/",
        "BACKLOG_QUEUE_URL": backlog.url,
        "DEAD_LETTER_QUEUE_URL": dead_letter.url,
        "MAX_CONCURRENT_TASKS": str(scenario.max_concurrent_tasks),
    }
    if scenario.max_concurrent_tasks:
        env["STATE_TABLE"] = TABLE
    return env


def build(scenario: Scenario, latency: Latency | None = None) -> Outcome:
    """The world, ready to run: models, clients, the function, the mapping, the deliveries."""
    latency = latency or Latency()
    rng = random.Random(scenario.seed)
    uploads = plan_uploads(scenario, rng)
    sim = Simulation()
    duration_rng = random.Random(scenario.seed + 1)
    durations: dict[Identity, float] = {}

    def duration(identity: Identity) -> float:
        if identity not in durations:
            durations[identity] = duration_rng.uniform(*scenario.duration)
        return durations[identity]

    ecs = EcsModel(
        sim,
        duration=duration,
        account_limit=scenario.account_limit,
        faults={upload.identity: upload.faults for upload in uploads if upload.faults},
    )
    sqs = SqsModel(sim)
    dead_letter = sqs.create(Queue("jobs-dlq"))
    backlog = sqs.create(
        Queue(
            "jobs-backlog",
            visibility_timeout=BACKLOG_VISIBILITY_SECONDS,
            dead_letter=dead_letter,
            max_receives=MAX_RECEIVES,
        )
    )
    dynamodb = DynamoModel(sim)
    retries = BotocoreRetries(
        sim, random.Random(scenario.seed + 2), max_attempts=MAX_ATTEMPTS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )  # fmt: skip
    settings = load_settings(runner_environment(scenario, backlog, dead_letter))
    services = Services(
        SimEcsClient(ecs, retries, latency),  # type: ignore[arg-type]
        sqs=SimSqsClient(sqs, retries, latency),  # type: ignore[arg-type]
        dynamodb=SimDynamoClient(dynamodb, retries, latency),  # type: ignore[arg-type]
        clock=lambda: EPOCH + sim.now,
        sleep=sim.sleep,
        rng=random.Random(scenario.seed + 3),
        emit_metric=lambda line: None,  # thousands of batches wait; CloudWatch is not modelled
    )
    lambdas = LambdaModel(
        sim,
        sqs,
        function=runner_function(settings, services),
        timeout=FUNCTION_TIMEOUT_SECONDS,
        latency=latency,
        dead_letter=dead_letter,
    )
    lambdas.map_queue(
        backlog,
        maximum_concurrency=scenario.maximum_concurrency,
        batch_size=scenario.batch_size,
        batching_window=scenario.batching_window,
    )
    for upload in uploads:
        for when in upload.deliveries:
            lambdas.deliver(upload.event, when)
    return Outcome(
        scenario, uploads, sim, ecs, sqs, dynamodb, lambdas, backlog, dead_letter, retries,
        settings, services,
    )  # fmt: skip


def runner_function(settings: RunnerSettings, services: Services) -> Callable[..., Any]:
    """handler.handler, but for where its settings and clients come from."""

    def function(event: Any, remaining_ms: Callable[[], int]) -> Any:
        return process_event(event, settings, services, remaining_ms=remaining_ms)

    return function


def run_scenario(scenario: Scenario, latency: Latency | None = None) -> Outcome:
    """Run until every upload settled (or the horizon): nothing waiting, nothing running."""
    outcome = build(scenario, latency)
    last_delivery = max(when for upload in outcome.uploads for when in upload.deliveries)
    settle(outcome, after=last_delivery)
    return outcome


def settle(outcome: Outcome, after: float) -> None:
    """Run until, past `after` and Lambda's asynchronous retries, nothing waits or runs."""
    sim = outcome.sim
    quiet_after = after + 3 * 60 + 2 * FUNCTION_TIMEOUT_SECONDS

    def watch() -> None:
        outcome.samples.append((sim.now, len(outcome.backlog), len(outcome.ecs.in_flight)))
        settled = (
            sim.now > quiet_after
            and not outcome.backlog.messages
            and not outcome.ecs.in_flight
            and outcome.lambdas.stats.concurrent == 0
        )
        if settled:
            outcome.settled_at = sim.now
            sim.stop()
        else:
            sim.call_later(60.0, watch)

    sim.call_later(60.0, watch)
    sim.run(until=outcome.scenario.horizon)
    outcome.sqs.expire_all(sim.now)


def replay(outcome: Outcome, event: Any) -> None:
    """What `python -m jobctl redrive` does with a message: the event to the handler, in its
    own process with no Lambda context (so no time limit)."""

    def call() -> None:
        try:
            process_event(event, outcome.settings, outcome.services)
        except Exception as error:  # counted, as the redrive reports it
            outcome.replay_failures.append(str(error))

    outcome.sim.spawn(call, name="redrive")


@dataclass(frozen=True)
class Figures:
    """A run's figures, as the proof prints and checks them (picklable, unlike the world)."""

    label: str
    uploads: int
    deliveries: int
    tasks: int
    with_one_task: int
    duplicated: int
    lost: int
    dead_letters: int
    expired: int
    limit: int
    peak_in_flight: int
    finished_hours: float
    best_hours: float
    invocations: dict[str, int]
    lambda_errors: int  # invocations that raised or timed out
    sqs_requests: dict[str, int]
    events: int
    faults: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.finished_hours / self.best_hours

    @property
    def invocations_per_upload(self) -> float:
        return sum(self.invocations.values()) / self.uploads

    @property
    def sqs_requests_per_upload(self) -> float:
        return sum(self.sqs_requests.values()) / self.uploads


def figures(outcome: Outcome, label: str) -> Figures:
    scenario = outcome.scenario
    counted = tally(outcome)
    limit = min(scenario.account_limit, scenario.max_concurrent_tasks or scenario.account_limit)
    task_seconds = sum(task.stops_at - task.started_at for task in outcome.ecs.tasks)
    return Figures(
        label=label,
        uploads=len(outcome.uploads),
        deliveries=sum(len(upload.deliveries) for upload in outcome.uploads),
        tasks=counted.tasks,
        with_one_task=counted.with_one_task,
        duplicated=len(counted.duplicated),
        lost=len(counted.lost),
        dead_letters=len(outcome.dead_letter.messages),
        expired=counted.expired,
        limit=limit,
        peak_in_flight=outcome.ecs.peak_in_flight,
        finished_hours=outcome.ecs.last_stop / 3600,
        best_hours=(task_seconds / limit + scenario.arrival_window) / 3600,
        invocations=dict(outcome.lambdas.stats.invocations),
        lambda_errors=sum(outcome.lambdas.stats.errors.values()),
        sqs_requests=dict(outcome.sqs.calls),
        events=outcome.sim.events,
        faults=dict(outcome.ecs.faults_given),
    )


def run_for_figures(scenario: Scenario, label: str) -> Figures:
    """Run a scenario and keep only its figures."""
    return figures(run_scenario(scenario), label)
