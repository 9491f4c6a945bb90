"""The runner's real code on a model of AWS and a virtual clock: uploads in, tasks out.

`run_scenario` builds the world of `aws_model` (ECS with its tasks' whole lives, EventBridge
with the task-stop rule and the sweep's schedule, the job table, the backlog, dead-letter and
failed-jobs queues, Lambda invoked by S3, by EventBridge and by the backlog's event source
mapping), delivers the planned S3 events at their simulated times, and runs until every upload
has settled: a successful task, or a failure reported, with nothing waiting or running. The
runner decides everything: event parsing, job records, slots, retries, timeouts; its settings
are read from the environment the infrastructure gives the Lambda (`load_settings`), its
clients are the model's.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import itertools
import json
import logging
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from infra.scheduling import task_stopped_pattern
from tests.fakes.aws_model import (
    EPOCH,
    Behaviour,
    BotocoreRetries,
    EcsModel,
    EventBus,
    Fault,
    Identity,
    LambdaModel,
    Latency,
    Queue,
    SimDynamoClient,
    SimEcsClient,
    SimSqsClient,
    SimTask,
    SqsModel,
)
from tests.fakes.dynamodb_model import DynamoModel, Index, Table
from tests.fakes.virtual_clock import Simulation

TASKRUNNER_DIR = Path(__file__).resolve().parents[2] / "taskrunner"
if str(TASKRUNNER_DIR) not in sys.path:  # the Lambda package's modules are top-level
    sys.path.insert(0, str(TASKRUNNER_DIR))

from backlog import MAX_RECEIVES  # noqa: E402 - found through the path above
from dispatch import route  # noqa: E402
from job_store import (  # noqa: E402
    DELAYED_INDEX,
    INDEX_PROJECTIONS,
    INDEXES,
    SWEEP_INDEX,
    WAITING_INDEX,
    decode,
)
from runner_settings import RunnerSettings, load_settings  # noqa: E402
from services import MAX_ATTEMPTS, READ_TIMEOUT_SECONDS, Services  # noqa: E402

FUNCTION_TIMEOUT_SECONDS = 120.0  # infra/runner.py
BACKLOG_VISIBILITY_SECONDS = 6 * FUNCTION_TIMEOUT_SECONDS  # AWS's advice for a mapped queue
SWEEP_SECONDS = 60.0  # infra/scheduling.py: rate(1 minute)
CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/jobs"
TASK_DEFINITION_ARN = "arn:aws:ecs:us-east-1:123456789012:task-definition/jobs-job:1"
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
    behaviours: tuple[Behaviour, ...] = ()  # what its attempts' tasks do (then: they succeed)

    @property
    def arrival(self) -> float:
        return self.deliveries[0]


@dataclass(frozen=True)
class Scenario:
    uploads: int
    seed: int
    arrival_window: float = 600.0
    duration: tuple[float, float] = (60.0, 600.0)
    start_time: tuple[float, float] = (30.0, 90.0)  # Fargate's PENDING, counted in the limit
    account_limit: int = 100
    max_concurrent_tasks: int = 0
    raise_cap_to: int = 0  # maxConcurrentTasks raised to this at `raise_cap_at` (a redeploy)
    raise_cap_at: float = 0.0
    transient_fault_rate: float = 0.05
    duplicate_rate: float = 0.02
    duplicate_lag: tuple[float, float] = (0.0, 300.0)
    rejected_rate: float = 0.0  # uploads whose RunTask ECS rejects: failed, dead-lettered
    event_delay: tuple[float, float] = (1.0, 10.0)
    event_duplicate_rate: float = 0.01
    outage: tuple[float, float] | None = None  # EventBridge delivers nothing in [start, end)
    capacity_provider: str = "FARGATE"
    spot_rate: float = 0.0  # uploads whose first task is interrupted (some their second too)
    pull_failure_rate: float = 0.0  # whose first task fails to start
    exit_1_rate: float = 0.0  # whose every task exits 1
    hang_rate: float = 0.0  # whose first task hangs past the timeout
    task_timeout_minutes: int = 0
    max_attempts: int = 3
    spot_fallback: bool = False
    maximum_concurrency: int = 2  # the backlog's event source mapping, as infra/runner.py
    batch_size: int = 100  # ditto
    batching_window: float = 10.0  # ditto
    index_lag: float = 0.5  # DynamoDB's indexes are eventually consistent
    horizon: float = 14 * 24 * 3600.0  # the run stops here whatever happens


@dataclass
class Outcome:
    scenario: Scenario
    uploads: list[Upload]
    sim: Simulation
    ecs: EcsModel
    sqs: SqsModel
    dynamodb: DynamoModel
    events: EventBus
    lambdas: LambdaModel
    backlog: Queue
    dead_letter: Queue
    failed_jobs: Queue
    retries: BotocoreRetries
    settings: list[RunnerSettings]  # in force: the last; earlier ones before a redeploy
    services: Services
    settled_at: float = 0.0
    replay_failures: list[str] = field(default_factory=list)

    @property
    def tasks_by_upload(self) -> dict[Identity, list[SimTask]]:
        return self.ecs.tasks_by_upload()

    def reports_by_upload(self) -> tuple[Counter[Identity], Counter[Identity]]:
        """Upload -> failure reports naming it: (dead-letter queue, failed-jobs queue)."""
        from upload_events import parse_record

        dead: Counter[Identity] = Counter()
        for message in self.dead_letter.messages.values():
            body = json.loads(message.body)
            event = body.get("requestPayload", body)
            for record in event["Records"]:
                upload = parse_record(record)
                dead[(upload.bucket, upload.key, upload.version_id)] += 1
        failed: Counter[Identity] = Counter()
        for message in self.failed_jobs.messages.values():
            body = json.loads(message.body)
            failed[(body["bucket"], body["key"], body.get("versionId"))] += 1
        return dead, failed

    def jobs(self) -> dict[Identity, Any]:
        """Every job record in the table, by its upload."""
        found = {}
        for (pk, _), item in self.dynamodb.table(TABLE).items.items():
            if pk.startswith("upload#"):
                job = decode(item)
                found[(job.bucket, job.key, job.version_id)] = job
        return found


def succeeded(task: SimTask) -> bool:
    return task.stop_code == "EssentialContainerExited" and task.exit_code == 0


@dataclass(frozen=True)
class Tally:
    """What happened to the planned uploads, for the assertions and the report."""

    tasks: int
    with_one_success: int
    duplicated: list[Identity]  # two successful tasks, or a success and a failure report
    unknown: list[Identity]  # tasks for uploads never made (a key decoding bug)
    dead_lettered: Counter[Identity]
    failed_reported: Counter[Identity]
    lost: list[Identity]  # neither a successful task nor a failure reported
    overlapping: list[Identity]  # two attempts' tasks in flight at once
    expired: int  # messages SQS dropped at the end of their retention

    @property
    def not_exactly_one(self) -> list[Identity]:
        return self.duplicated + self.lost


def tally(outcome: Outcome) -> Tally:
    planned = {upload.identity for upload in outcome.uploads}
    tasks = outcome.tasks_by_upload
    dead, failed = outcome.reports_by_upload()
    successes = {u: sum(succeeded(t) for t in tasks.get(u, ())) for u in planned}
    ends = {u: successes[u] + dead[u] + failed[u] for u in planned}
    overlapping = []
    for upload in planned:
        spans = sorted((t.created_at, t.stops_at) for t in tasks.get(upload, ()))
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            overlapping.append(upload)
    return Tally(
        tasks=len(outcome.ecs.tasks),
        with_one_success=sum(1 for u in planned if successes[u] == 1 and ends[u] == 1),
        duplicated=sorted((u for u in planned if ends[u] > 1), key=str),
        unknown=sorted(set(tasks) - planned, key=str),
        dead_lettered=dead,
        failed_reported=failed,
        lost=sorted((u for u in planned if ends[u] == 0), key=str),
        overlapping=sorted(overlapping, key=str),
        expired=sum(len(queue.expired) for queue in outcome.sqs.queues.values()),
    )


def event_time(t: float) -> str:
    from tests.fakes.aws_model import iso

    return iso(t)


def s3_event(
    bucket: str, key: str, version_id: str | None, number: int, at: float
) -> dict[str, Any]:
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
                "eventTime": event_time(at),
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


def _faults(scenario: Scenario, rng: random.Random) -> tuple[tuple[Fault, ...], bool]:
    """An upload's RunTask faults, and whether ECS rejects it for good."""
    draw = rng.random()
    if draw < scenario.rejected_rate:
        return (Fault.rejected(),), True
    if draw < scenario.rejected_rate + scenario.transient_fault_rate:
        kind = rng.choice(("throttling", "capacity", "lost-answer"))
        if kind == "throttling":
            return (Fault.throttling(),) * rng.randint(1, 2 * MAX_ATTEMPTS), False
        if kind == "capacity":
            return (Fault.capacity(),) * rng.randint(1, 3), False
        return (Fault.lost_answer(),) * rng.choice((1, 1, MAX_ATTEMPTS)), False
    return (), False


def _behaviours(scenario: Scenario, rng: random.Random) -> tuple[Behaviour, ...]:
    """What an upload's attempts do, in order; an attempt past the list succeeds."""
    draw = rng.random()
    limit = scenario.spot_rate
    if draw < limit:
        interruptions = 2 if rng.random() < 0.1 and scenario.max_attempts > 2 else 1
        return tuple(Behaviour("spot", at=rng.uniform(0.05, 0.95)) for _ in range(interruptions))
    limit += scenario.pull_failure_rate
    if draw < limit:
        return (Behaviour("pull-failure"),)
    limit += scenario.exit_1_rate
    if draw < limit:
        return (Behaviour("exit-1"),) * scenario.max_attempts
    limit += scenario.hang_rate
    if draw < limit:
        return (Behaviour("hang"),) * scenario.max_attempts
    return ()


def plan_uploads(scenario: Scenario, rng: random.Random) -> list[Upload]:
    """The uploads, their arrival times, their duplicates and their faults, from the seed."""
    uploads = []
    for number in range(scenario.uploads):
        bucket = BUCKETS[number % len(BUCKETS)]
        key = f"uploads/{number:06d}/{rng.choice(NAMES)}"
        version_id = (
            "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789.", k=32))
            if rng.random() < 0.5
            else None
        )
        arrival = rng.uniform(0, scenario.arrival_window)
        deliveries: tuple[float, ...] = (arrival,)
        if rng.random() < scenario.duplicate_rate:
            deliveries = (arrival, arrival + rng.uniform(*scenario.duplicate_lag))
        faults, rejected = _faults(scenario, rng)
        if rejected:
            deliveries = (arrival,)  # a duplicate would find the failed record: one report
        behaviours = _behaviours(scenario, rng)
        event = s3_event(bucket, key, version_id, number, arrival)
        uploads.append(Upload((bucket, key, version_id), event, deliveries, faults, behaviours))
    return uploads


def runner_environment(scenario: Scenario, queues: dict[str, Queue]) -> dict[str, str]:
    """What infra/runner.py puts in the Lambda's environment (network ids made up)."""
    return {
        "CLUSTER_ARN": CLUSTER_ARN,
        "TASK_DEFINITION_ARN": TASK_DEFINITION_ARN,
        "CONTAINER_NAME": "job",
        "SUBNETS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
        "SECURITY_GROUPS": "sg-0123abcd",
        "ASSIGN_PUBLIC_IP": "DISABLED",
        "CAPACITY_PROVIDER": scenario.capacity_provider,
        "RESULT_PREFIX": "results/",
        "BACKLOG_QUEUE_URL": queues["backlog"].url,
        "DEAD_LETTER_QUEUE_URL": queues["dead-letter"].url,
        "FAILED_JOBS_QUEUE_URL": queues["failed-jobs"].url,
        "STATE_TABLE": TABLE,
        "MAX_CONCURRENT_TASKS": str(scenario.max_concurrent_tasks),
        "TASK_TIMEOUT_SECONDS": str(scenario.task_timeout_minutes * 60),
        "TASK_MAX_ATTEMPTS": str(scenario.max_attempts),
        "SPOT_FALLBACK_TO_FARGATE": str(scenario.spot_fallback).lower(),
        "JOB_LOG_GROUP": "/jobs/job",
    }


def job_table() -> Table:
    """The table as infra/runner.py declares it: keys, and the runner's indexes."""
    return Table(
        TABLE,
        indexes={
            name: Index(name, hash_key, range_key, INDEX_PROJECTIONS[name])
            for name, (hash_key, range_key) in INDEXES.items()
        },
    )


def build(scenario: Scenario, latency: Latency | None = None) -> Outcome:
    """The world, ready to run: models, clients, the function, its triggers, the deliveries."""
    latency = latency or Latency()
    rng = random.Random(scenario.seed)
    uploads = plan_uploads(scenario, rng)
    sim = Simulation()
    timing = random.Random(scenario.seed + 1)
    durations: dict[Identity, float] = {}

    def duration(identity: Identity) -> float:
        if identity not in durations:
            durations[identity] = timing.uniform(*scenario.duration)
        return durations[identity]

    def start_time(identity: Identity) -> float:
        return timing.uniform(*scenario.start_time)

    behaviours = {upload.identity: upload.behaviours for upload in uploads}

    def plan(identity: Identity, attempt: int) -> Behaviour:
        planned = behaviours.get(identity, ())
        return planned[attempt - 1] if attempt <= len(planned) else Behaviour()

    events = EventBus(
        sim,
        random.Random(scenario.seed + 4),
        delay=scenario.event_delay,
        duplicate_rate=scenario.event_duplicate_rate,
        outages=[scenario.outage] if scenario.outage else [],
    )
    ecs = EcsModel(
        sim,
        duration=duration,
        start_time=start_time,
        plan=plan,
        account_limit=scenario.account_limit,
        faults={upload.identity: upload.faults for upload in uploads if upload.faults},
        events=events,
        rng=random.Random(scenario.seed + 5),
    )
    sqs = SqsModel(sim)
    dead_letter = sqs.create(Queue("jobs-dlq"))
    failed_jobs = sqs.create(Queue("jobs-failed-jobs"))
    backlog = sqs.create(
        Queue(
            "jobs-backlog",
            visibility_timeout=BACKLOG_VISIBILITY_SECONDS,
            dead_letter=dead_letter,
            max_receives=MAX_RECEIVES,
        )
    )
    dynamodb = DynamoModel(lambda: EPOCH + sim.now, index_lag=scenario.index_lag)
    dynamodb.create(job_table())
    retries = BotocoreRetries(
        sim, random.Random(scenario.seed + 2), max_attempts=MAX_ATTEMPTS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )  # fmt: skip
    queues = {"backlog": backlog, "dead-letter": dead_letter, "failed-jobs": failed_jobs}
    settings = [load_settings(runner_environment(scenario, queues))]
    services = Services(
        SimEcsClient(ecs, retries, latency),  # type: ignore[arg-type]
        sqs=SimSqsClient(sqs, retries, latency),  # type: ignore[arg-type]
        dynamodb=SimDynamoClient(dynamodb, retries, latency),  # type: ignore[arg-type]
        clock=lambda: EPOCH + sim.now,
        sleep=sim.sleep,
        rng=random.Random(scenario.seed + 3),
        emit_metric=lambda line: None,  # CloudWatch is not modelled
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
    family_prefix = TASK_DEFINITION_ARN.rsplit(":", 1)[0] + ":"
    events.rule(
        task_stopped_pattern(CLUSTER_ARN, family_prefix),
        lambda event, at: lambdas.deliver(event, at, kind="task-event"),
    )
    events.schedule(
        SWEEP_SECONDS,
        lambda event, at: lambdas.deliver(event, at, kind="sweep"),
        until=scenario.horizon,
    )
    if scenario.raise_cap_to:
        raised = replace(settings[0], max_concurrent_tasks=scenario.raise_cap_to)
        sim.call_at(scenario.raise_cap_at, lambda: settings.append(raised))
    for upload in uploads:
        for when in upload.deliveries:
            lambdas.deliver(upload.event, when)
    return Outcome(
        scenario, uploads, sim, ecs, sqs, dynamodb, events, lambdas, backlog, dead_letter,
        failed_jobs, retries, settings, services,
    )  # fmt: skip


def runner_function(settings: list[RunnerSettings], services: Services) -> Callable[..., Any]:
    """handler.handler, but for where its settings and clients come from: each invocation takes
    the settings in force when it starts, as a new Lambda container would after a deploy."""

    def function(event: Any, remaining_ms: Callable[[], int]) -> Any:
        return route(event, settings[-1], services, remaining_ms=remaining_ms)

    return function


def run_scenario(scenario: Scenario, latency: Latency | None = None) -> Outcome:
    """Run until every upload settled (or the horizon): nothing waiting, nothing running.

    The runner's log lines (thousands of failures and retries a run plans) are not kept: the
    figures and the model say what happened.
    """
    outcome = build(scenario, latency)
    last_delivery = max(when for upload in outcome.uploads for when in upload.deliveries)
    runner_log = logging.getLogger("taskrunner")
    level = runner_log.level
    runner_log.setLevel(logging.CRITICAL)
    try:
        with fewer_collections():
            settle(outcome, after=last_delivery)
    finally:
        runner_log.setLevel(level)
    return outcome


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """A run allocates millions of short-lived objects beside a live set that grows to every
    upload's record: collecting the young generation every 700 allocations, and the whole
    heap every 70,000, is about a tenth of a big run's time, and a third of the time its
    figures take once it ended (they read every record). Nothing here needs it sooner."""
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def settle(outcome: Outcome, after: float) -> None:
    """Run until, past `after` and Lambda's asynchronous retries, nothing waits or runs."""
    sim = outcome.sim
    quiet_after = after + 3 * 60 + 2 * FUNCTION_TIMEOUT_SECONDS

    def watch() -> None:
        settled = (
            sim.now > quiet_after
            and not outcome.backlog.messages
            and not outcome.ecs.in_flight
            and outcome.lambdas.stats.concurrent == 0
            and outcome.dynamodb.count(TABLE, WAITING_INDEX) == 0
            and outcome.dynamodb.count(TABLE, DELAYED_INDEX) == 0
            and outcome.dynamodb.count(TABLE, SWEEP_INDEX) == 0
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
            route(event, outcome.settings[-1], outcome.services)
        except Exception as error:  # counted, as the redrive reports it
            outcome.replay_failures.append(str(error))

    outcome.sim.spawn(call, name="redrive")


# --- figures -----------------------------------------------------------------------------------

# us-east-1 list prices (REFERENCE.md; DynamoDB on demand since November 2024; Lambda arm64).
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_GB_SECOND = 0.0000133334
LAMBDA_MEMORY_GB = 0.25  # infra/runner.py MEMORY_MB
SQS_REQUEST = 0.40 / 1e6
DYNAMODB_WRITE_UNIT = 0.625 / 1e6
DYNAMODB_READ_UNIT = 0.125 / 1e6


def best_hours(work_seconds: float, scenario: Scenario, limit: int) -> float:
    """The soonest the work could end at the limits in force, plus the arrival window."""
    if scenario.raise_cap_to and scenario.raise_cap_at * limit < work_seconds:
        rest = work_seconds - scenario.raise_cap_at * limit
        finish = scenario.raise_cap_at + rest / min(scenario.account_limit, scenario.raise_cap_to)
    else:
        finish = work_seconds / limit
    return (finish + scenario.arrival_window) / 3600


def order_inversions(outcome: Outcome, slack: float = 60.0) -> int:
    """Uploads whose first task started while one recorded more than `slack` before them had
    not started yet: out of order beyond the slack the design allows."""
    first: dict[Identity, float] = {}
    for task in outcome.ecs.tasks:
        first.setdefault(task.identity, task.created_at)
    pairs = sorted(
        (job.recorded_at, first[identity])
        for identity, job in outcome.jobs().items()
        if identity in first
    )
    readies = [ready for ready, _ in pairs]
    latest_before: list[float] = []  # the latest first start among jobs recorded up to here
    latest = float("-inf")
    for _, started in pairs:
        latest = max(latest, started)
        latest_before.append(latest)
    inversions = 0
    for ready, started in pairs:
        before = bisect.bisect_left(readies, ready - slack)
        if before and latest_before[before - 1] > started:
            inversions += 1
    return inversions


def cap_use(outcome: Outcome) -> tuple[int, int, float | None]:
    """Most tasks in flight before and after the cap was raised, and seconds until the raised
    cap was first used in full (None: never, or no raise)."""
    scenario = outcome.scenario
    if not scenario.raise_cap_to:
        return outcome.ecs.peak_in_flight, 0, None
    before = max(
        (n for t, n in outcome.ecs.in_flight_changes if t < scenario.raise_cap_at), default=0
    )
    after = [(t, n) for t, n in outcome.ecs.in_flight_changes if t >= scenario.raise_cap_at]
    peak_after = max((n for _, n in after), default=0)
    reached = next((t for t, n in after if n >= scenario.raise_cap_to), None)
    return before, peak_after, None if reached is None else reached - scenario.raise_cap_at


@dataclass(frozen=True)
class Figures:
    """A run's figures, as the proofs print and check them (picklable, unlike the world)."""

    label: str
    uploads: int
    deliveries: int
    tasks: int
    with_one_success: int
    duplicated: int
    lost: int
    overlapping: int
    dead_letters: int
    failed_jobs: int
    expired: int
    limit: int
    raised_to: int  # the limit after a raise of the cap, if there was one
    peak_in_flight: int
    peak_before_raise: int
    peak_after_raise: int
    raised_cap_used_after: float | None
    finished_hours: float
    best_hours: float
    invocations: dict[str, int]
    lambda_errors: int  # invocations that raised or timed out
    lambda_seconds: float
    run_task_calls: int
    sqs_requests: dict[str, int]
    dynamodb_units: dict[str, float]
    dynamodb_calls: dict[str, int]
    events: int
    faults: dict[str, int]
    order_inversions: int
    events_dropped: int

    @property
    def ratio(self) -> float:
        return self.finished_hours / self.best_hours

    @property
    def invocations_per_upload(self) -> float:
        return sum(self.invocations.values()) / self.uploads

    @property
    def run_task_per_upload(self) -> float:
        return self.run_task_calls / self.uploads

    def dollars_per_thousand(self) -> dict[str, float]:
        """What the scheduler's requests cost per 1,000 uploads, at list prices."""
        per = 1000 / self.uploads
        lambda_cost = (
            sum(self.invocations.values()) * LAMBDA_REQUEST
            + self.lambda_seconds * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND
        )
        return {
            "Lambda": lambda_cost * per,
            "SQS": sum(self.sqs_requests.values()) * SQS_REQUEST * per,
            "DynamoDB": (
                self.dynamodb_units.get("write", 0) * DYNAMODB_WRITE_UNIT
                + self.dynamodb_units.get("read", 0) * DYNAMODB_READ_UNIT
            )
            * per,
            "EventBridge": 0.0,  # AWS service events and scheduled rules are free
        }


@fewer_collections()
def figures(outcome: Outcome, label: str) -> Figures:
    scenario = outcome.scenario
    counted = tally(outcome)
    limit = min(scenario.account_limit, scenario.max_concurrent_tasks or scenario.account_limit)
    work = sum(task.stops_at - task.created_at for task in outcome.ecs.tasks if task.stopped)
    before, after, reached = cap_use(outcome)
    return Figures(
        label=label,
        uploads=len(outcome.uploads),
        deliveries=sum(len(upload.deliveries) for upload in outcome.uploads),
        tasks=counted.tasks,
        with_one_success=counted.with_one_success,
        duplicated=len(counted.duplicated),
        lost=len(counted.lost),
        overlapping=len(counted.overlapping),
        dead_letters=len(outcome.dead_letter.messages),
        failed_jobs=len(outcome.failed_jobs.messages),
        expired=counted.expired,
        limit=limit,
        raised_to=min(scenario.account_limit, scenario.raise_cap_to or scenario.account_limit)
        if scenario.raise_cap_to
        else 0,
        peak_in_flight=outcome.ecs.peak_in_flight,
        peak_before_raise=before,
        peak_after_raise=after,
        raised_cap_used_after=reached,
        finished_hours=outcome.ecs.last_stop / 3600,
        best_hours=best_hours(work, scenario, limit),
        invocations=dict(outcome.lambdas.stats.invocations),
        lambda_errors=sum(outcome.lambdas.stats.errors.values()),
        lambda_seconds=outcome.lambdas.stats.seconds,
        run_task_calls=outcome.ecs.calls["RunTask"],
        sqs_requests=dict(outcome.sqs.calls),
        dynamodb_units=dict(outcome.dynamodb.units),
        dynamodb_calls=dict(outcome.dynamodb.calls),
        events=outcome.sim.events,
        faults=dict(outcome.ecs.faults_given),
        order_inversions=order_inversions(outcome),
        events_dropped=outcome.events.dropped,
    )


def run_for_figures(scenario: Scenario, label: str) -> Figures:
    """Run a scenario and keep only its figures."""
    return figures(run_scenario(scenario), label)
