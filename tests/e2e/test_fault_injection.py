"""Fault-injection proof: 1,000 uploads through the real runner code against a faulty fake ECS.

What is real: the runner's `process_event` (the whole of `handler.handler` but for where its
client comes from) with `RunnerSettings` loaded from the Lambda's environment, and a botocore ECS
client made by `make_ecs_client` with the runner's retry settings (standard mode, 8 attempts,
per-client retry quota) talking HTTP to the fake on 127.0.0.1. The redrive replays dead-letter
records with `jobctl.redrive.plan` and the real `handler.handler`, imported by `load_runner`.

What is modelled: Lambda's asynchronous invocation. Every S3 delivery is an invocation on a
bounded pool of "containers" (threads, each with its own client made once, as at import); an
invocation that raises, or outlives the 120 s function timeout, is retried twice (≈1 min, then
≈2 min later, REFERENCE.md), and after the third failure its on-failure record, in Lambda's
shape, goes to an in-memory dead-letter list.

Faults, for FAULT_RATE (default 0.30) of the uploads, one kind each, drawn from FAULT_SEED:
  throttling  a burst of 1-24 ThrottlingException answers to the upload's calls (8 or more
              outlast one invocation's attempts; 24 outlast all three: a dead letter),
  capacity    1-3 RunTask answers with a `failures` entry (3: a dead letter),
  timeout     1, 2 or 8 answers later than the client's read timeout; the fake still starts
              the task, so the retry must find it by clientToken (8: the invocation fails
              though its task started, and Lambda's retry must not start another),
  duplicate   S3 delivers the event twice, at once or up to 30 s later.
On top of these, every upload goes through the fake's launch bucket (burst 100, 20 launches/s):
the uploads arrive as one bulk upload of 1,000 objects in 20 s, well beyond the refill rate.
Kinds are not combined on one upload: a duplicate delivery of an upload whose calls keep
failing is two invocations that each dead-letter, so "exactly one dead-letter record" would not
hold; `test_a_duplicate_delivery_that_keeps_failing_...` below shows what happens then.

Time is scaled by FAULT_TIME_SCALE (default 10: ~35 s here instead of over 5 min):
botocore's retry backoff sleeps, the launch bucket's clock, the Lambda retry delays and the
function timeout run 10x faster than real time, and the client's connect/read timeouts are
3 s / 10 s divided by the same factor (a "timeout" fault delays its answer 1.5 read timeouts).
Attempt counts, backoff shape and retry quota are botocore's own, unscaled. The loop is bounded:
a fixed number of deliveries, at most three invocations each, and a wall-clock guard.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import random
import sys
import threading
import time
import types
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus, unquote_plus

import botocore.endpoint
import pytest

from jobctl.redrive import plan
from jobctl.runner import TASKRUNNER_DIR, load_runner
from tests.fakes.fake_ecs import FakeEcs, Fault, LaunchBucket, RunTaskCall, running_fake_ecs
from tests.taskrunner.conftest import RUNNER_ENV

if str(TASKRUNNER_DIR) not in sys.path:  # the Lambda package's modules are top-level
    sys.path.insert(0, str(TASKRUNNER_DIR))

from runner_settings import RunnerSettings, load_settings  # found through the path above
from task_starter import (
    CONNECT_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    client_config,
    make_ecs_client,
    process_event,
)

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient

UPLOADS = int(os.environ.get("FAULT_UPLOADS", "1000"))
FAULT_RATE = float(os.environ.get("FAULT_RATE", "0.30"))
SEED = int(os.environ.get("FAULT_SEED", "20261128"))
TIME_SCALE = float(os.environ.get("FAULT_TIME_SCALE", "10"))  # simulated seconds per real one
CONCURRENCY = int(os.environ.get("FAULT_CONCURRENCY", "48"))  # Lambda containers at once
WALL_CLOCK_LIMIT_SECONDS = 60.0  # the requirement: the proof finishes within a minute

# Lambda, as infra/runner.py configures it and REFERENCE.md describes asynchronous invocation.
FUNCTION_TIMEOUT_SECONDS = 120
ASYNC_RETRIES = 2
RETRY_DELAYS_SECONDS = (60.0, 120.0)  # before the first and the second retry
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:task-runner"

ARRIVAL_WINDOW_SECONDS = 20.0  # simulated: the bulk upload's span
DUPLICATE_LAG_SECONDS = 30.0  # simulated: the latest a duplicate delivery comes
CAPACITY_REASONS = (
    ("RESOURCE:MEMORY", None),
    ("Capacity is unavailable at this time", "Please try again later"),
)
# Names as people upload them: spaces, '+', '%', accents, emoji, reserved URL characters.
NAMES = (
    "report.csv",
    "quarterly report 2026.csv",
    "a+b=c.csv",
    "100% done.csv",
    "café/naïve résumé.pdf",
    "📈 growth 🚀.xlsx",
    "~tilde!(paren)*star'quote.txt",
    "semi;colon,comma&amp?q#hash.txt",
    "data/2026/11/28/part-00001.parquet",
)
BUCKETS = ("uploads-bucket", "media-uploads")

FaultKind = Literal["throttling", "capacity", "timeout", "duplicate"]
FAULT_KINDS: tuple[FaultKind, ...] = ("throttling", "capacity", "timeout", "duplicate")
Identity = tuple[str, str, str | None]  # bucket, key, versionId: one upload


@dataclass(frozen=True)
class PlannedUpload:
    """One object created in S3, the event S3 sends for it, and what goes wrong for it."""

    bucket: str
    key: str
    version_id: str | None
    event: dict[str, Any]
    fault: FaultKind | None = None
    faults: tuple[Fault, ...] = ()  # RunTask answers the fake gives this upload, in order
    deliveries: tuple[float, ...] = (0.0,)  # simulated arrival time of each S3 delivery

    @property
    def identity(self) -> Identity:
        return (self.bucket, self.key, self.version_id)


@dataclass
class Delivery:
    """One S3 delivery of an event: a Lambda asynchronous invocation and its retries."""

    upload: PlannedUpload
    arrival: float  # simulated seconds after the start
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0
    succeeded: bool = False


@dataclass
class Outcome:
    """Everything the simulation observed, for the assertions and the report."""

    invocations: int = 0
    retries: int = 0
    lambda_timeouts: int = 0
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    reported_started: list[str] = field(default_factory=list)  # ARNs the handler returned
    seconds: float = 0.0


class FaultPlan:
    """The fake's fault policy: each upload's planned faults, handed out call by call."""

    def __init__(self, uploads: list[PlannedUpload]) -> None:
        self._pending = {upload.identity: deque(upload.faults) for upload in uploads}
        self.given: Counter[str] = Counter()  # fault kind -> calls that got it

    def fault_for(self, call: RunTaskCall) -> Fault | None:
        """Called by the fake under its lock, so the deques need no lock of their own."""
        environment = call.environment
        identity = (
            environment.get("S3_BUCKET", ""),
            environment.get("S3_KEY", ""),
            environment.get("S3_VERSION_ID"),
        )
        pending = self._pending.get(identity)
        if not pending:
            return None
        fault = pending.popleft()
        self.given[_kind_of(fault)] += 1
        return fault


def _kind_of(fault: Fault) -> str:
    return {"error": "throttling", "failure": "capacity", "delay": "timeout"}[fault.kind]


def s3_event(bucket: str, key: str, version_id: str | None, sequence: int) -> dict[str, Any]:
    """An ObjectCreated event as S3 sends it: one record, the key form-encoded."""
    s3_object: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": 1024 + sequence,
        "eTag": f"{sequence:032x}",
        "sequencer": f"00{sequence:014X}",
    }
    if version_id is not None:
        s3_object["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": f"2026-11-28T14:{sequence // 60 % 60:02d}:{sequence % 60:02d}.000Z",
                "eventName": ("ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload")[
                    sequence % 2
                ],
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.10"},
                "responseElements": {"x-amz-request-id": f"{sequence:016X}"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "runner-trigger",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": s3_object,
                },
            }
        ]
    }


def plan_uploads(
    count: int, fault_rate: float, rng: random.Random, delay_seconds: float
) -> list[PlannedUpload]:
    """`count` uploads arriving in one bulk upload; `fault_rate` of them get one fault kind."""
    uploads: list[PlannedUpload] = []
    versioned_keys: list[tuple[str, str]] = []
    for number in range(count):
        bucket = BUCKETS[number % len(BUCKETS)]
        versioned = rng.random() < 0.5
        if versioned and versioned_keys and rng.random() < 0.1:
            # A new version of an object uploaded earlier: another upload, so another task.
            bucket, key = rng.choice(versioned_keys)
        else:
            # Unversioned keys are unique: a task names bucket, key and version only, so two
            # unversioned uploads of one key could not be told apart by their tasks.
            key = f"uploads/{number:04d}/{rng.choice(NAMES)}"
        version_id = None
        if versioned:
            version_id = "".join(
                rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789.", k=32)
            )
            versioned_keys.append((bucket, key))
        arrival = rng.uniform(0, ARRIVAL_WINDOW_SECONDS)
        fault: FaultKind | None = rng.choice(FAULT_KINDS) if rng.random() < fault_rate else None
        faults: tuple[Fault, ...] = ()
        deliveries: tuple[float, ...] = (arrival,)
        if fault == "throttling":
            burst = rng.choice((*range(1, 8), *range(8, 16), 24))
            faults = (Fault.throttling(),) * burst
        elif fault == "capacity":
            reason, detail = rng.choice(CAPACITY_REASONS)
            faults = (Fault.failure(reason, detail),) * rng.choice((1, 2, 3))
        elif fault == "timeout":
            faults = (Fault.delay(delay_seconds),) * rng.choice((1, 1, 2, 8))
        elif fault == "duplicate":
            lag = 0.0 if rng.random() < 0.5 else rng.uniform(0, DUPLICATE_LAG_SECONDS)
            deliveries = (arrival, arrival + lag)
        event = s3_event(bucket, key, version_id, number)
        uploads.append(PlannedUpload(bucket, key, version_id, event, fault, faults, deliveries))
    return uploads


def on_failure_record(delivery: Delivery, error: BaseException | str) -> dict[str, Any]:
    """What Lambda sends to the on-failure destination once the retries are exhausted."""
    error_type = "Sandbox.Timedout" if isinstance(error, str) else type(error).__name__
    return {
        "version": "1.0",
        "timestamp": "2026-11-28T14:05:00.000Z",
        "requestContext": {
            "requestId": delivery.request_id,
            "functionArn": f"{FUNCTION_ARN}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": delivery.attempts,
        },
        "requestPayload": delivery.upload.event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": error_type,
            "requestId": delivery.request_id,
            "stackTrace": [],
        },
    }


class LambdaModel:
    """S3 invoking the runner asynchronously: a bounded pool, retries, on-failure records."""

    def __init__(
        self,
        settings: RunnerSettings,
        containers: int,
        scale: float,
        retry_delays: tuple[float, float] | None = None,  # real seconds; default: scaled
    ) -> None:
        self._settings = settings
        self._scale = scale
        self._retry_delays: tuple[float, ...] = retry_delays or tuple(
            d / scale for d in RETRY_DELAYS_SECONDS
        )
        self._containers: SimpleQueue[ECSClient] = SimpleQueue()
        config = client_config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS / scale,
            read_timeout=READ_TIMEOUT_SECONDS / scale,
        )
        # Made here, not in the pool's threads: boto3's default session is not thread-safe.
        for _ in range(containers):
            self._containers.put(make_ecs_client(config))
        self._pool_size = containers
        self._lock = threading.Lock()
        self.outcome = Outcome()

    def run(self, deliveries: list[Delivery], deadline: float) -> Outcome:
        """Invoke every delivery until it succeeds or is dead-lettered; bounded by `deadline`."""
        start = time.monotonic()
        due: list[tuple[float, int, Delivery]] = []
        for number, delivery in enumerate(deliveries):
            heapq.heappush(due, (start + delivery.arrival / self._scale, number, delivery))
        running: dict[Future[BaseException | str | None], Delivery] = {}
        sequence = len(deliveries)
        with ThreadPoolExecutor(self._pool_size, thread_name_prefix="lambda") as pool:
            while due or running:
                if time.monotonic() > deadline:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pytest.fail(
                        f"wall-clock guard: {len(running)} invocations running and {len(due)} "
                        f"waiting after {time.monotonic() - start:.0f} s"
                    )
                while due and due[0][0] <= time.monotonic():
                    _, _, delivery = heapq.heappop(due)
                    delivery.attempts += 1
                    self.outcome.invocations += 1
                    running[pool.submit(self._invoke, delivery.upload.event)] = delivery
                wait_for = min(0.25, max(0.001, due[0][0] - time.monotonic())) if due else 0.25
                if not running:
                    time.sleep(wait_for)
                    continue
                done, _ = wait(running, timeout=wait_for, return_when=FIRST_COMPLETED)
                for future in done:
                    delivery = running.pop(future)
                    error = future.result()
                    if error is None:
                        delivery.succeeded = True
                    elif delivery.attempts <= ASYNC_RETRIES:
                        self.outcome.retries += 1
                        later = self._retry_delays[delivery.attempts - 1]
                        sequence += 1
                        heapq.heappush(due, (time.monotonic() + later, sequence, delivery))
                    else:
                        self.outcome.dead_letters.append(on_failure_record(delivery, error))
        self.outcome.seconds = time.monotonic() - start
        return self.outcome

    def _invoke(self, event: dict[str, Any]) -> BaseException | str | None:
        """One invocation on a free container: None, the exception, or a timeout message."""
        ecs = self._containers.get()
        started = time.monotonic()

        def remaining_ms() -> int:
            elapsed = (time.monotonic() - started) * self._scale
            return int((FUNCTION_TIMEOUT_SECONDS - elapsed) * 1000)

        try:
            summary = process_event(event, self._settings, ecs, remaining_ms=remaining_ms)
        except Exception as error:  # Lambda retries whatever the handler raises
            return error
        finally:
            self._containers.put(ecs)
        with self._lock:
            self.outcome.reported_started.extend(summary["started"].values())
        if remaining_ms() < 0:
            # Lambda would have stopped the invocation and counted it failed, whatever it did.
            with self._lock:
                self.outcome.lambda_timeouts += 1
            return f"Task timed out after {FUNCTION_TIMEOUT_SECONDS:.2f} seconds"
        return None


def tasks_by_upload(fake: FakeEcs) -> dict[Identity, set[str]]:
    """Upload -> ARNs of the tasks the fake started for it, read from each task's environment."""
    found: dict[Identity, set[str]] = defaultdict(set)
    for task in fake.tasks:
        (override,) = task["overrides"]["containerOverrides"]
        environment = {pair["name"]: pair["value"] for pair in override["environment"]}
        identity = (
            environment["S3_BUCKET"],
            environment["S3_KEY"],
            environment.get("S3_VERSION_ID"),
        )
        found[identity].add(task["taskArn"])
    return found


def dead_letters_by_upload(records: list[dict[str, Any]]) -> Counter[Identity]:
    """Upload -> dead-letter records whose event names it (keys decoded here, not by the runner)."""
    found: Counter[Identity] = Counter()
    for record in records:
        for s3_record in record["requestPayload"]["Records"]:
            s3 = s3_record["s3"]
            key = unquote_plus(s3["object"]["key"], encoding="utf-8", errors="strict")
            found[(s3["bucket"]["name"], key, s3["object"].get("versionId"))] += 1
    return found


def as_sqs_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """A dead-letter record as the redrive receives it from the queue."""
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": f"AQEB{uuid.uuid4().hex}",
        "Body": json.dumps(record, ensure_ascii=False),
    }


def sample(identities: list[Identity], limit: int = 5) -> str:
    return ", ".join(
        f"s3://{bucket}/{key}?versionId={version}" for bucket, key, version in identities[:limit]
    )


@contextmanager
def runner_world(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    fault_plan: FaultPlan,
) -> Iterator[tuple[FakeEcs, RunnerSettings, list[float]]]:
    """The fake ECS with the launch bucket, the runner's environment pointing at it, and
    botocore's backoff sleeps scaled (and summed, in simulated seconds)."""
    backoff: list[float] = []

    def scaled_sleep(seconds: float) -> None:
        backoff.append(seconds)
        time.sleep(seconds / TIME_SCALE)

    # botocore.endpoint uses `time` only to sleep between retries.
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=scaled_sleep))
    # One ERROR line per failed record, thousands of them, would only slow the test down.
    caplog.set_level(logging.CRITICAL, logger="taskrunner")
    bucket = LaunchBucket(burst=100, rate=20, clock=lambda: time.monotonic() * TIME_SCALE)
    with running_fake_ecs(launch_bucket=bucket, fault_policy=fault_plan.fault_for) as fake:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        environment = {
            **RUNNER_ENV,
            "AWS_ENDPOINT_URL_ECS": fake.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # a dummy credential for the fake
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        try:
            yield fake, load_settings(os.environ), backoff
        finally:
            sys.modules.pop("handler", None)  # its client points at this fake, about to stop


def redrive_dead_letters(records: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Replay every record as `python -m jobctl redrive` does: (restarted, failures)."""
    runner = load_runner(RUNNER_ENV)  # the real handler module, imported with this environment
    restarted = 0
    failures: list[str] = []
    for record in records:
        replay = plan("dead-letter", as_sqs_message(record))
        try:
            runner(replay.event, None)
        except Exception as error:  # collected for the assertion message
            failures.append(f"{replay.keys}: {error}")
        else:
            restarted += 1
    return restarted, failures


def test_every_upload_ends_as_one_task_or_one_dead_letter_and_a_redrive_leaves_one_task_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    wall_start = time.monotonic()
    rng = random.Random(SEED)
    delay = 1.5 * READ_TIMEOUT_SECONDS / TIME_SCALE
    uploads = plan_uploads(UPLOADS, FAULT_RATE, rng, delay)
    fault_plan = FaultPlan(uploads)
    with runner_world(monkeypatch, caplog, tmp_path, fault_plan) as (fake, settings, backoff):
        deliveries = [
            Delivery(upload, arrival) for upload in uploads for arrival in upload.deliveries
        ]
        lambda_model = LambdaModel(settings, CONCURRENCY, TIME_SCALE)
        outcome = lambda_model.run(deliveries, deadline=wall_start + WALL_CLOCK_LIMIT_SECONDS - 10)

        tasks = tasks_by_upload(fake)
        dead = dead_letters_by_upload(outcome.dead_letters)
        planned = {upload.identity for upload in uploads}
        unknown = sorted(set(tasks) - planned, key=str)
        duplicated = sorted((u for u in planned if len(tasks.get(u, ())) > 1), key=str)
        lost = sorted((u for u in planned if not tasks.get(u) and not dead[u]), key=str)
        not_exactly_one = sorted(
            (u for u in planned if (len(tasks.get(u, ())), dead[u]) not in ((1, 0), (0, 1))),
            key=str,
        )
        calls = fake.calls
        rate_limited = sum(call.rate_limited for call in calls)
        started_before_redrive = sum(len(arns) for arns in tasks.values())

        restarted, redrive_failures = redrive_dead_letters(outcome.dead_letters)
        after = tasks_by_upload(fake)
        not_one_after = sorted((u for u in planned if len(after.get(u, ())) != 1), key=str)
        unknown_after = sorted(set(after) - planned, key=str)

    seconds = time.monotonic() - wall_start
    planned_kinds = Counter(upload.fault for upload in uploads if upload.fault)
    print(
        f"\nfault injection: seed {SEED}, fault rate {FAULT_RATE:.0%}, time scale x{TIME_SCALE:g},"
        f" {CONCURRENCY} containers\n"
        f"  uploads            {len(uploads)} ({len(deliveries)} S3 deliveries)\n"
        f"  faulty uploads     {dict(planned_kinds)}\n"
        f"  invocations        {outcome.invocations} ({outcome.retries} Lambda retries, "
        f"{outcome.lambda_timeouts} function timeouts)\n"
        f"  RunTask calls      {len(calls)}; faults given {dict(fault_plan.given)}; "
        f"launch bucket refused {rate_limited}\n"
        f"  botocore backoff   {len(backoff)} sleeps, {sum(backoff):.0f} s simulated\n"
        f"  started tasks      {started_before_redrive}\n"
        f"  dead-lettered      {len(outcome.dead_letters)} records, {len(+dead)} uploads\n"
        f"  lost               {len(lost)}\n"
        f"  duplicate tasks    {len(duplicated)}\n"
        f"  redriven           {restarted} of {len(outcome.dead_letters)} "
        f"({len(redrive_failures)} failed); uploads with exactly one task after: "
        f"{len(planned) - len(not_one_after)} of {len(planned)}\n"
        f"  seconds            {seconds:.1f} (simulation {outcome.seconds:.1f})"
    )

    assert not unknown, f"tasks for uploads that were never made (key decoding?): {sample(unknown)}"
    assert not duplicated, f"{len(duplicated)} uploads got more than one task: {sample(duplicated)}"
    assert not lost, f"{len(lost)} uploads got neither a task nor a dead letter: {sample(lost)}"
    assert not not_exactly_one, (
        f"{len(not_exactly_one)} uploads did not end as exactly one task or exactly one dead "
        f"letter: {[(u, len(tasks.get(u, ())), dead[u]) for u in not_exactly_one[:5]]}"
    )
    assert set(outcome.reported_started) <= {arn for arns in tasks.values() for arn in arns}, (
        "the handler reported task ARNs the fake never started"
    )
    for record in outcome.dead_letters:
        (s3_record,) = record["requestPayload"]["Records"]
        key = unquote_plus(s3_record["s3"]["object"]["key"])
        assert record["requestContext"]["approximateInvokeCount"] == 1 + ASYNC_RETRIES
        assert key in record["responsePayload"]["errorMessage"], (
            f"the dead letter's error does not name its key {key!r}: "
            f"{record['responsePayload']['errorMessage']}"
        )
    if FAULT_RATE > 0:
        # Without these the proof would prove nothing about the paths it claims to cover.
        assert set(fault_plan.given) == {"throttling", "capacity", "timeout"}, fault_plan.given
        assert planned_kinds["duplicate"] > 0
        assert outcome.dead_letters, "no upload was dead-lettered: the redrive went untested"
        assert outcome.retries > 0
    assert rate_limited > 0, "the launch bucket never throttled: the load did not exceed it"
    assert not redrive_failures, f"the redrive failed for: {redrive_failures[:5]}"
    assert not unknown_after, (
        f"the redrive started tasks for unknown uploads: {sample(unknown_after)}"
    )
    assert not not_one_after, (
        f"after the redrive, {len(not_one_after)} uploads have not exactly one task: "
        f"{[(u, len(after.get(u, ()))) for u in not_one_after[:5]]}"
    )
    assert seconds < WALL_CLOCK_LIMIT_SECONDS, f"the proof took {seconds:.0f} s"


def test_a_duplicate_delivery_that_keeps_failing_leaves_two_dead_letters_and_one_task_after_redrive(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Why the proof above gives a duplicate delivery no other fault: each delivery is its own
    invocation, so each dead-letters on its own. The clientToken still makes one task of both."""
    event = s3_event(BUCKETS[0], "uploads/twice/naïve résumé.pdf", None, 1)
    capacity = Fault.failure("RESOURCE:MEMORY")
    upload = PlannedUpload(
        BUCKETS[0], "uploads/twice/naïve résumé.pdf", None, event, "duplicate", (capacity,) * 6
    )
    fault_plan = FaultPlan([upload])
    with runner_world(monkeypatch, caplog, tmp_path, fault_plan) as (fake, settings, _):
        lambda_model = LambdaModel(settings, 2, TIME_SCALE, retry_delays=(0.05, 0.1))
        outcome = lambda_model.run(
            [Delivery(upload, 0.0), Delivery(upload, 0.0)], deadline=time.monotonic() + 30
        )
        assert fake.tasks == []
        assert dead_letters_by_upload(outcome.dead_letters) == {upload.identity: 2}
        assert redrive_dead_letters(outcome.dead_letters) == (2, [])
        assert [len(arns) for arns in tasks_by_upload(fake).values()] == [1]
