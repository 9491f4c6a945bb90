"""A model of the AWS parts around the runner, on the virtual clock of `virtual_clock`.

What is modelled, as REFERENCE.md and AWS's documentation describe it:
- ECS RunTask: a token bucket (burst 100, 20 per second) answering ThrottlingException "Rate
  exceeded"; an account limit on tasks PENDING or RUNNING, answered with a `failures` entry
  naming the vCPU limit; clientToken idempotency for 24 hours (same parameters: the same task;
  others: ConflictException). Faults per upload: throttling, capacity failures, lost answers
  whose task did start, rejections.
- The task's life: PENDING for Fargate's start time (image pull and all, counted against the
  limit), RUNNING for its duration, then STOPPED as its behaviour says: exit 0, a job failure
  (exit 1), a Spot interruption at a moment of its run, a failure to start (an image pull that
  timed out), or a hang that only StopTask ends (SIGTERM; SIGKILL after the stop timeout).
  DescribeTasks answers with what ECS's does; a task ECS does not know yet, or stopped over an
  hour ago, is MISSING. StopTask.
- "ECS Task State Change" events on every change, with `version` growing, published to
  EventBridge (`EventBus`), which delivers those a rule's pattern matches to its target after
  1-10 s, 1 % twice, so not in order; during an outage it delivers none. A scheduled rule
  invokes its target every minute, on the minute.
- SQS standard queues: delay, visibility timeout, ChangeMessageVisibility(Batch), receive
  counts, redrive to a dead-letter queue beyond maxReceiveCount, retention (an expired message
  is counted: it would be a lost upload).
- DynamoDB: `dynamodb_model`.
- Lambda: asynchronous invocation (by S3 and EventBridge: two retries, 1 and 2 minutes apart,
  then an on-failure record to the dead-letter queue), an SQS event source mapping (batches,
  at most `maximum_concurrency` invocations at once, partial batch responses), and the function
  timeout, which stops an invocation wherever it is.

Clients given to the runner answer as boto3's do (dicts, ClientError, ReadTimeoutError, datetime
for times) and retry as botocore's standard mode does: throttling, server errors and timeouts,
with jittered exponential backoff (up to 20 s), at most `max_attempts` attempts. Its retry quota
is not modelled. Every call takes a modelled latency, so invocations overlap and interleave.
"""

from __future__ import annotations

import datetime
import functools
import heapq
import itertools
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

from tests.fakes.dynamodb_model import DynamoError, DynamoModel
from tests.fakes.virtual_clock import Process, Simulation

ACCOUNT = "123456789012"
REGION = "us-east-1"
EPOCH = 1_795_000_000.0  # the simulated world's wall clock at t=0 (late 2026)
TOKEN_WINDOW_SECONDS = 24 * 3600  # ECS remembers a clientToken this long
STOPPED_VISIBLE_SECONDS = 3600.0  # ECS describes a stopped task for at least an hour
VCPU_LIMIT_REASON = "You've reached the limit on the number of vCPUs you can run concurrently"
CAPACITY_REASON = "Capacity is unavailable at this time. Please try again later"
PULL_FAILURE_REASON = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
    "resolve ref 123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:latest: dial tcp: i/o timeout"
)
SPOT_REASON = "Your Spot Task was interrupted."
EXITED_REASON = "Essential container in task exited"
RECEIVE_MAX_MESSAGES = 10  # SQS returns at most this many messages per ReceiveMessage
STOP_TIMEOUT_SECONDS = 30.0  # the container's stopTimeout: SIGKILL after SIGTERM


def _json_copy(value: Any) -> Any:
    """A copy of a JSON value, as each delivery of an event is its own; TypeError for anything
    JSON has no type for. A third of `json.loads(json.dumps(...))`'s time, for 2 events a task."""
    kind = type(value)
    if kind is dict:
        return {str(name): _json_copy(inner) for name, inner in value.items()}
    if kind is list:
        return [_json_copy(inner) for inner in value]
    if kind in _JSON_SCALARS:
        return value
    raise TypeError(f"{kind.__name__} is not a JSON type")


_JSON_SCALARS = (str, int, float, bool, type(None))


@functools.lru_cache(maxsize=4096)
def wall(t: float) -> datetime.datetime:
    """The simulated time `t` as the wall-clock datetime boto3 would hand back (immutable, so
    shared: the sweep describes each task under way every minute)."""
    return datetime.datetime.fromtimestamp(EPOCH + t, datetime.UTC)


@functools.lru_cache(maxsize=4096)
def iso(t: float) -> str:
    """The simulated time `t` as EventBridge writes times (ISO 8601, milliseconds, Z); a task's
    times recur in each of its events. `wall(t)`'s date and time to the second (a datetime
    rounds to the microsecond), by arithmetic: every event has one, at a new moment."""
    moment = EPOCH + t
    fraction, whole = math.modf(moment)
    seconds = int(whole) + (round(fraction * 1e6) >= 1_000_000)
    of_day = seconds % 86400
    return (
        f"{_date(seconds // 86400)}T{of_day // 3600:02d}:{of_day // 60 % 60:02d}:"
        f"{of_day % 60:02d}.{int(moment * 1000) % 1000:03d}Z"
    )


@functools.lru_cache(maxsize=64)
def _date(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(days * 86400))


@dataclass(frozen=True)
class Latency:
    """Seconds an API call takes, as seen by the caller."""

    run_task: float = 0.15
    describe_tasks: float = 0.05
    # SQS answers within milliseconds and no decision of the runner's races another's over it;
    # as an instant it saves the simulation an event per call.
    sqs: float = 0.0
    dynamodb: float = 0.005
    invoke: float = 0.02  # Lambda's own overhead per invocation


class TokenBucket:
    def __init__(self, sim: Simulation, burst: float, rate: float) -> None:
        self.sim = sim
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.last = sim.now
        self.refused = 0

    def take(self) -> bool:
        self.tokens = min(self.burst, self.tokens + (self.sim.now - self.last) * self.rate)
        self.last = self.sim.now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False


class ModelError(Exception):
    """An error answer: ClientError for the caller, unless botocore retries it first."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or "Throttl" in self.code or "ProvisionedThroughput" in self.code

    def client_error(self, operation: str, attempts: int) -> ClientError:
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.status, "RetryAttempts": attempts - 1},
            **self.extra,
        }
        return ClientError(response, operation)  # type: ignore[arg-type]


class LostAnswer(Exception):  # noqa: N818 - a situation, not an error of the model
    """The request was handled, but its answer never reaches the caller (a read timeout)."""


# --- ECS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """What one RunTask call of an upload gets instead of its normal handling."""

    kind: str  # "throttling", "capacity", "lost-answer", "rejected"

    @classmethod
    def throttling(cls) -> Fault:
        return cls("throttling")

    @classmethod
    def capacity(cls) -> Fault:
        return cls("capacity")

    @classmethod
    def lost_answer(cls) -> Fault:
        return cls("lost-answer")

    @classmethod
    def rejected(cls) -> Fault:
        return cls("rejected")


@dataclass(frozen=True)
class Behaviour:
    """What one attempt's task does once started."""

    kind: str = "ok"  # ok, exit-1, spot, pull-failure, hang
    at: float = 0.5  # spot: the fraction of its run at which it is interrupted

    @property
    def exit_code(self) -> int:
        return 1 if self.kind == "exit-1" else 0


Identity = tuple[str, str, str | None]  # bucket, key, versionId: one upload
Plan = Callable[[Identity, int], Behaviour]  # (upload, attempt) -> what its task does


@dataclass
class SimTask:
    arn: str
    identity: Identity
    token: str | None
    attempt: int
    provider: str
    request: Mapping[str, Any]
    behaviour: Behaviour
    created_at: float
    start_time: float  # PENDING this long
    duration: float  # then RUNNING this long (unless its behaviour or a StopTask ends it)
    status: str = "PENDING"
    started_at: float | None = None
    stopped_at: float | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    exit_code: int | None = None
    version: int = 1
    stop_asked_at: float | None = None

    @property
    def stopped(self) -> bool:
        return self.status == "STOPPED"

    @property
    def stops_at(self) -> float:
        return self.stopped_at if self.stopped_at is not None else float("inf")

    def description(self, times: Callable[[float], Any]) -> dict[str, Any]:
        """The task as DescribeTasks (times as datetimes) or an event (ISO strings) gives it."""
        cluster_arn = str(self.request["cluster"])
        container: dict[str, Any] = {
            "name": self.request["overrides"]["containerOverrides"][0]["name"],
            "lastStatus": self.status,
        }
        if self.exit_code is not None:
            container["exitCode"] = self.exit_code
        detail: dict[str, Any] = {
            "taskArn": self.arn,
            "clusterArn": cluster_arn,
            "taskDefinitionArn": self.request["taskDefinition"],
            "lastStatus": self.status,
            "desiredStatus": "STOPPED" if self.stopped or self.stop_asked_at else "RUNNING",
            "capacityProviderName": self.provider,
            "launchType": "FARGATE",
            "startedBy": self.request.get("startedBy"),
            "group": "family:jobs-job",
            "createdAt": times(self.created_at),
            "overrides": self.request["overrides"],
            "containers": [container],
            "version": self.version,
        }
        if self.started_at is not None:
            detail["startedAt"] = times(self.started_at)
        if self.stopped_at is not None:
            detail["stoppedAt"] = times(self.stopped_at)
            detail["stopCode"] = self.stop_code
            detail["stoppedReason"] = self.stopped_reason
        return detail


def environment_of(request: Mapping[str, Any]) -> dict[str, str]:
    (override,) = request["overrides"]["containerOverrides"]
    return {pair["name"]: pair["value"] for pair in override["environment"]}


def identity_of(request: Mapping[str, Any]) -> Identity:
    env = environment_of(request)
    return env["S3_BUCKET"], env["S3_KEY"], env.get("S3_VERSION_ID")


class EcsModel:
    def __init__(
        self,
        sim: Simulation,
        *,
        duration: Callable[[Identity], float],
        start_time: Callable[[Identity], float] = lambda identity: 0.0,
        plan: Plan | None = None,
        account_limit: int = 100,
        launch_bucket: TokenBucket | None = None,
        faults: Mapping[Identity, Iterable[Fault]] | None = None,
        listing_lag: float = 2.0,
        events: EventBus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sim = sim
        self.duration = duration
        self.start_time = start_time
        self.plan = plan or (lambda identity, attempt: Behaviour())
        self.account_limit = account_limit
        self.bucket = launch_bucket or TokenBucket(sim, 100, 20)
        self.faults = {identity: list(planned) for identity, planned in (faults or {}).items()}
        self.listing_lag = listing_lag
        self.events = events
        self.rng = rng or random.Random(0)
        self.tasks: list[SimTask] = []
        self.by_arn: dict[str, SimTask] = {}
        self.in_flight: dict[str, SimTask] = {}
        self.peak_in_flight = 0
        self.in_flight_changes: list[tuple[float, int]] = []  # (time, tasks in flight after)
        # token -> task, the rest of its request, when
        self.tokens: dict[str, tuple[SimTask, dict[str, Any], float]] = {}
        self.calls: Counter[str] = Counter()  # operation / outcome -> count
        self.first_call: dict[Identity, float] = {}  # upload -> its first RunTask
        self.faults_given: Counter[str] = Counter()
        self.last_stop = 0.0
        self._numbers = itertools.count(1)

    def run_task(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["RunTask"] += 1
        identity = identity_of(request)
        self.first_call.setdefault(identity, self.sim.now)
        planned = self.faults.get(identity)
        fault = planned.pop(0) if planned else None
        if fault is not None:
            self.faults_given[fault.kind] += 1
            if fault.kind == "throttling":
                raise ModelError("ThrottlingException", "Rate exceeded")
            if fault.kind == "capacity":
                return {"tasks": [], "failures": [{"reason": CAPACITY_REASON}]}
            if fault.kind == "rejected":
                raise ModelError(
                    "InvalidParameterException", "The task definition is not valid (injected)"
                )
        token = request.get("clientToken")
        params = {k: v for k, v in request.items() if k != "clientToken"}
        if token is not None and token in self.tokens:
            task, earlier, when = self.tokens[token]
            if self.sim.now - when < TOKEN_WINDOW_SECONDS:
                if earlier != params:
                    raise ModelError(
                        "ConflictException", "clientToken in use", resourceIds=[task.arn]
                    )
                self.calls["RunTask:idempotent"] += 1
                return self._answer(task, fault)
        if not self.bucket.take():
            self.calls["RunTask:throttled"] += 1
            raise ModelError("ThrottlingException", "Rate exceeded")
        if len(self.in_flight) >= self.account_limit:
            self.calls["RunTask:limit"] += 1
            return {"tasks": [], "failures": [{"reason": VCPU_LIMIT_REASON}]}
        task = self._start(request, identity, token)
        if token is not None:
            self.tokens[token] = (task, params, self.sim.now)
        return self._answer(task, fault)

    def _answer(self, task: SimTask, fault: Fault | None) -> dict[str, Any]:
        if fault is not None and fault.kind == "lost-answer":
            raise LostAnswer
        return {"tasks": [{"taskArn": task.arn, "lastStatus": "PROVISIONING"}], "failures": []}

    def _start(self, request: Mapping[str, Any], identity: Identity, token: str | None) -> SimTask:
        number = next(self._numbers)
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/jobs/{number:032x}"
        env = environment_of(request)
        attempt = int(env.get("JOB_ATTEMPT", "1"))
        (strategy,) = request["capacityProviderStrategy"]
        task = SimTask(
            arn=arn,
            identity=identity,
            token=token,
            attempt=attempt,
            provider=strategy["capacityProvider"],
            request=request,
            behaviour=self.plan(identity, attempt),
            created_at=self.sim.now,
            start_time=self.start_time(identity),
            duration=self.duration(identity),
        )
        self.tasks.append(task)
        self.by_arn[arn] = task
        self.in_flight[arn] = task
        self.peak_in_flight = max(self.peak_in_flight, len(self.in_flight))
        self.in_flight_changes.append((self.sim.now, len(self.in_flight)))
        self.sim.call_later(task.start_time, lambda: self._started(task))
        return task

    def _started(self, task: SimTask) -> None:
        if task.stopped:
            return
        behaviour = task.behaviour
        if behaviour.kind == "pull-failure" and task.stop_asked_at is None:
            self._stop(task, "TaskFailedToStart", PULL_FAILURE_REASON, None)
            return
        task.status = "RUNNING"
        task.started_at = self.sim.now
        task.version += 1
        self._publish(task)
        if behaviour.kind == "hang":
            return  # until StopTask
        if behaviour.kind == "spot" and task.provider == "FARGATE_SPOT":
            at = task.duration * behaviour.at
            self.sim.call_later(at, lambda: self._stop(task, "SpotInterruption", SPOT_REASON, 143))
            return
        self.sim.call_later(
            task.duration,
            lambda: self._stop(
                task, "EssentialContainerExited", EXITED_REASON, behaviour.exit_code
            ),
        )

    def _stop(self, task: SimTask, code: str, reason: str, exit_code: int | None) -> None:
        if task.stopped:
            return
        task.status = "STOPPED"
        task.stopped_at = self.sim.now
        task.stop_code = code
        task.stopped_reason = reason
        task.exit_code = exit_code if task.started_at is not None else None
        task.version += 1
        del self.in_flight[task.arn]
        self.in_flight_changes.append((self.sim.now, len(self.in_flight)))
        self.last_stop = max(self.last_stop, self.sim.now)
        self._publish(task)

    def _publish(self, task: SimTask) -> None:
        if self.events is None:
            return
        self.events.publish(
            {
                "version": "0",
                "id": f"{task.arn.rsplit('/', 1)[-1]}-{task.version}",
                "detail-type": "ECS Task State Change",
                "source": "aws.ecs",
                "account": ACCOUNT,
                "time": iso(self.sim.now),
                "region": REGION,
                "resources": [task.arn],
                "detail": task.description(iso),
            }
        )

    def stop_task(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["StopTask"] += 1
        task = self.by_arn.get(str(request["task"]))
        if task is None or task.request["cluster"] != request["cluster"]:
            raise ModelError("InvalidParameterException", "The referenced task was not found.")
        if not task.stopped and task.stop_asked_at is None:
            task.stop_asked_at = self.sim.now
            # SIGTERM: a job that handles it exits 143 at once; a hung one is killed (137).
            hung = task.behaviour.kind == "hang"
            delay = STOP_TIMEOUT_SECONDS if hung else self.rng.uniform(1.0, 5.0)
            reason = str(request.get("reason") or "Task stopped by user")
            self.sim.call_later(
                delay, lambda: self._stop(task, "UserInitiated", reason, 137 if hung else 143)
            )
        return {"task": task.description(wall)}

    def describe_tasks(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Tasks by ARN; one ECS does not know yet (within the lag), or stopped over an hour
        ago, is MISSING."""
        self.calls["DescribeTasks"] += 1
        tasks, failures = [], []
        for arn in request["tasks"]:
            task = self.by_arn.get(arn)
            if (
                task is None
                or task.created_at > self.sim.now - self.listing_lag
                or (task.stopped and self.sim.now - task.stops_at > STOPPED_VISIBLE_SECONDS)
            ):
                failures.append({"arn": arn, "reason": "MISSING"})
            else:
                tasks.append(task.description(wall))
        return {"tasks": tasks, "failures": failures}

    def list_tasks(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls["ListTasks"] += 1
        visible_before = self.sim.now - self.listing_lag
        arns = [arn for arn, task in self.in_flight.items() if task.created_at <= visible_before]
        start = int(request.get("nextToken") or 0)
        page = int(request.get("maxResults", 100))
        answer: dict[str, Any] = {"taskArns": arns[start : start + page]}
        if start + page < len(arns):
            answer["nextToken"] = str(start + page)
        return answer

    def tasks_by_upload(self) -> dict[Identity, list[SimTask]]:
        found: dict[Identity, list[SimTask]] = defaultdict(list)
        for task in self.tasks:
            found[task.identity].append(task)
        return found


# --- EventBridge -----------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge's pattern matching, for what patterns here use: values listed, `prefix`,
    `anything-but`, nested objects, `$or`."""
    for name, wanted in pattern.items():
        if name == "$or":
            if not any(matches(option, event) for option in wanted):
                return False
            continue
        value = event.get(name) if isinstance(event, Mapping) else None
        if isinstance(wanted, Mapping):
            if not isinstance(value, Mapping) or not matches(wanted, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_matches_one(rule, one) for rule in wanted for one in values):
            return False
    return True


def _matches_one(rule: Any, value: Any) -> bool:
    if isinstance(rule, Mapping):
        if "prefix" in rule:
            return isinstance(value, str) and value.startswith(rule["prefix"])
        if "anything-but" in rule:
            excluded = rule["anything-but"]
            excluded = excluded if isinstance(excluded, list) else [excluded]
            return value is not None and value not in excluded
        raise ValueError(f"the model does not understand the pattern {rule!r}")
    return bool(rule == value)


@dataclass
class EventBus:
    """The default event bus: rules with patterns, targets, delivery delays and outages."""

    sim: Simulation
    rng: random.Random
    delay: tuple[float, float] = (1.0, 10.0)
    duplicate_rate: float = 0.01
    outages: list[tuple[float, float]] = field(default_factory=list)  # [start, end) in sim time
    rules: list[tuple[Mapping[str, Any], Callable[[Any, float], None]]] = field(
        default_factory=list
    )
    published: int = 0
    delivered: int = 0
    dropped: int = 0

    def rule(self, pattern: Mapping[str, Any], target: Callable[[Any, float], None]) -> None:
        """`target(event, at)` is called once per delivery, with the time it arrives."""
        self.rules.append((pattern, target))

    def down(self) -> bool:
        return any(start <= self.sim.now < end for start, end in self.outages)

    def publish(self, event: Mapping[str, Any]) -> None:
        self.published += 1
        for pattern, target in self.rules:
            if not matches(pattern, event):
                continue
            if self.down():
                self.dropped += 1
                continue
            copies = 2 if self.rng.random() < self.duplicate_rate else 1
            for _ in range(copies):
                self.delivered += 1
                target(_json_copy(event), self.sim.now + self.rng.uniform(*self.delay))

    def schedule(self, every: float, target: Callable[[Any, float], None], until: float) -> None:
        """A scheduled rule: `target` on every multiple of `every`, unless EventBridge is down."""

        def tick() -> None:
            if self.sim.now > until:
                return
            if self.down():
                self.dropped += 1
            else:
                self.delivered += 1
                target(
                    {
                        "version": "0",
                        "detail-type": "Scheduled Event",
                        "source": "aws.events",
                        "account": ACCOUNT,
                        "time": iso(self.sim.now),
                        "region": REGION,
                        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/jobs-sweep"],
                        "detail": {},
                    },
                    self.sim.now,
                )
            self.sim.call_later(every, tick)

        self.sim.call_at(every * (self.sim.now // every + 1), tick)


# --- SQS -------------------------------------------------------------------------------------


@dataclass
class Message:
    message_id: str
    body: str
    sent_at: float
    attributes: dict[str, Any]
    visible_at: float
    receive_count: int = 0
    receipt: str = ""
    first_received_at: float | None = None
    version: int = 0


@dataclass
class Queue:
    name: str
    visibility_timeout: float = 30.0
    retention: float = 14 * 24 * 3600.0
    dead_letter: Queue | None = None
    max_receives: int = 0
    messages: dict[str, Message] = field(default_factory=dict)
    heap: list[tuple[float, int, str, int]] = field(default_factory=list)
    expired: list[Message] = field(default_factory=list)
    moved: int = 0  # to the dead-letter queue by the redrive policy
    sent: int = 0  # messages ever sent to it
    waiters: list[Process] = field(default_factory=list)  # long polls with nothing yet
    notify_at: float | None = None

    @property
    def url(self) -> str:
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.name}"

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.name}"

    def __len__(self) -> int:
        return len(self.messages)


class SqsModel:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.queues: dict[str, Queue] = {}
        self.calls: Counter[str] = Counter()
        self._numbers = itertools.count(1)
        self._seq = itertools.count()

    def create(self, queue: Queue) -> Queue:
        self.queues[queue.url] = queue
        return queue

    def send(
        self,
        queue: Queue,
        body: str,
        *,
        delay: float = 0.0,
        attributes: Mapping[str, Any] | None = None,
        sent_at: float | None = None,
    ) -> Message:
        number = next(self._numbers)
        message = Message(
            f"m-{number:08d}",
            body,
            self.sim.now if sent_at is None else sent_at,
            dict(attributes or {}),
            self.sim.now + delay,
        )
        queue.messages[message.message_id] = message
        queue.sent += 1
        self._push(queue, message)
        return message

    def _push(self, queue: Queue, message: Message) -> None:
        message.version += 1
        entry = (message.visible_at, next(self._seq), message.message_id, message.version)
        heapq.heappush(queue.heap, entry)
        if queue.waiters:
            self._schedule_notify(queue)

    def wait(self, queue: Queue, timeout: float) -> None:
        """A long poll that found nothing: park until a message is visible, or `timeout`."""
        process = self.sim.current
        queue.waiters.append(process)
        self._schedule_notify(queue)
        try:
            self.sim.sleep(timeout)
        finally:
            if process in queue.waiters:
                queue.waiters.remove(process)

    def _schedule_notify(self, queue: Queue) -> None:
        upcoming = self.next_visible(queue)
        if upcoming is None:
            return
        when = max(upcoming, self.sim.now)
        if queue.notify_at is not None and queue.notify_at <= when:
            return
        queue.notify_at = when
        self.sim.call_at(when, lambda: self._notify(queue, when))

    def _notify(self, queue: Queue, when: float) -> None:
        """Wake one waiting poller when a message turns visible (not all of them at once)."""
        if queue.notify_at != when:
            return  # superseded by an earlier notice
        queue.notify_at = None
        upcoming = self.next_visible(queue)
        if not queue.waiters or upcoming is None:
            return
        if upcoming > self.sim.now:
            self._schedule_notify(queue)
            return
        self.sim.wake(queue.waiters.pop(0))
        # The next waiter hears of what is left once this one has received.
        again = self.sim.now + 0.05
        queue.notify_at = again
        self.sim.call_at(again, lambda: self._notify(queue, again))

    def next_visible(self, queue: Queue) -> float | None:
        while queue.heap:
            _, _, message_id, version = queue.heap[0]
            message = queue.messages.get(message_id)
            if message is None or message.version != version:
                heapq.heappop(queue.heap)
                continue
            return message.visible_at
        return None

    def receive(self, queue: Queue, limit: int) -> list[Message]:
        """Up to `limit` visible messages, each made invisible for the visibility timeout.

        Charged as SQS bills it: a ReceiveMessage request returns 10 messages at most, so a
        poller gathering a batch of 100 makes at least 10.
        """
        got: list[Message] = []
        now = self.sim.now
        while queue.heap and len(got) < limit:
            when, _, message_id, version = queue.heap[0]
            if when > now:
                break
            heapq.heappop(queue.heap)
            message = queue.messages.get(message_id)
            if message is None or message.version != version:
                continue
            if now >= message.sent_at + queue.retention:
                del queue.messages[message_id]
                queue.expired.append(message)
                continue
            if queue.dead_letter is not None and message.receive_count >= queue.max_receives:
                del queue.messages[message_id]
                queue.moved += 1
                self.send(
                    queue.dead_letter,
                    message.body,
                    attributes=message.attributes,
                    sent_at=message.sent_at,  # SQS keeps the original enqueue time
                )
                continue
            message.receive_count += 1
            message.first_received_at = message.first_received_at or now
            message.receipt = f"{message_id}/{message.receive_count}"
            message.visible_at = now + queue.visibility_timeout
            message.version += 1  # its old heap entry is void; the new one is pushed below
            got.append(message)
        for message in got:  # after the loop: one receive never returns a message twice
            self._push(queue, message)
        self.calls["ReceiveMessage"] += max(1, -(-len(got) // RECEIVE_MAX_MESSAGES))
        return got

    def delete(self, queue: Queue, receipt: str) -> bool:
        message_id = receipt.split("/", 1)[0]
        message = queue.messages.get(message_id)
        if message is None or message.receipt != receipt:
            return False
        del queue.messages[message_id]
        return True

    def change_visibility(self, queue: Queue, receipt: str, seconds: float) -> None:
        message_id = receipt.split("/", 1)[0]
        message = queue.messages.get(message_id)
        if message is None or message.receipt != receipt or message.visible_at <= self.sim.now:
            raise ModelError("ReceiptHandleIsInvalid", "the receipt handle is not in flight")
        if not 0 <= seconds <= 43_200:
            raise ModelError("InvalidParameterValue", f"VisibilityTimeout {seconds}")
        message.visible_at = self.sim.now + seconds
        self._push(queue, message)

    def expire_all(self, at: float) -> None:
        """Count the messages that would have expired by `at` (the end of the run)."""
        for queue in self.queues.values():
            for message in list(queue.messages.values()):
                if at >= message.sent_at + queue.retention:
                    del queue.messages[message.message_id]
                    queue.expired.append(message)


# --- clients: what boto3 would hand the runner -------------------------------------------------


class BotocoreRetries:
    """Standard mode: retry throttling, 5xx and timeouts with jittered backoff, then raise."""

    def __init__(
        self, sim: Simulation, rng: random.Random, *, max_attempts: int, read_timeout: float
    ) -> None:
        self.sim = sim
        self.rng = rng
        self.max_attempts = max_attempts
        self.read_timeout = read_timeout
        self.backoff_seconds = 0.0

    def call(self, operation: str, latency: float, handle: Callable[[], Any]) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            if latency:
                self.sim.sleep(latency)
            try:
                answer = handle()
            except ModelError as error:
                if not error.retryable or attempt == self.max_attempts:
                    raise error.client_error(operation, attempt) from None
            except LostAnswer:
                self.sim.sleep(self.read_timeout)
                if attempt == self.max_attempts:
                    raise ReadTimeoutError(
                        endpoint_url=f"https://ecs.{REGION}.amazonaws.com/"
                    ) from None
            else:
                if isinstance(answer, dict):
                    answer.setdefault("ResponseMetadata", {"RetryAttempts": attempt - 1})
                return answer
            pause = self.rng.random() * min(20.0, 2.0 ** (attempt - 1))
            self.backoff_seconds += pause
            self.sim.sleep(pause)
        raise AssertionError("unreachable")


class SimEcsClient:
    def __init__(self, model: EcsModel, retries: BotocoreRetries, latency: Latency) -> None:
        self.model = model
        self.retries = retries
        self.latency = latency

    def run_task(self, **request: Any) -> Any:
        return self.retries.call(
            "RunTask", self.latency.run_task, lambda: self.model.run_task(request)
        )

    def list_tasks(self, **request: Any) -> Any:
        return self.retries.call(
            "ListTasks", self.latency.describe_tasks, lambda: self.model.list_tasks(request)
        )

    def describe_tasks(self, **request: Any) -> Any:
        return self.retries.call(
            "DescribeTasks", self.latency.describe_tasks, lambda: self.model.describe_tasks(request)
        )

    def stop_task(self, **request: Any) -> Any:
        return self.retries.call(
            "StopTask", self.latency.describe_tasks, lambda: self.model.stop_task(request)
        )


class SimSqsClient:
    def __init__(self, model: SqsModel, retries: BotocoreRetries, latency: Latency) -> None:
        self.model = model
        self.retries = retries
        self.latency = latency

    def _queue(self, url: str) -> Queue:
        queue = self.model.queues.get(url)
        if queue is None:
            raise ModelError("AWS.SimpleQueueService.NonExistentQueue", f"no queue {url}")
        return queue

    def send_message(self, **request: Any) -> Any:
        def send() -> dict[str, Any]:
            self.model.calls["SendMessage"] += 1
            delay = request.get("DelaySeconds", 0)
            if not 0 <= delay <= 900:
                raise ModelError("InvalidParameterValue", f"DelaySeconds {delay}")
            message = self.model.send(
                self._queue(request["QueueUrl"]),
                request["MessageBody"],
                delay=delay,
                attributes=request.get("MessageAttributes"),
            )
            return {"MessageId": message.message_id}

        return self.retries.call("SendMessage", self.latency.sqs, send)

    def change_message_visibility_batch(self, **request: Any) -> Any:
        def change() -> dict[str, Any]:
            self.model.calls["ChangeMessageVisibilityBatch"] += 1
            if not 1 <= len(request["Entries"]) <= 10:
                raise ModelError(
                    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "1 to 10 entries"
                )
            queue = self._queue(request["QueueUrl"])
            successful, failed = [], []
            for entry in request["Entries"]:
                try:
                    self.model.change_visibility(
                        queue, entry["ReceiptHandle"], entry["VisibilityTimeout"]
                    )
                except ModelError as error:
                    failed.append({"Id": entry["Id"], "Code": error.code, "SenderFault": True})
                else:
                    successful.append({"Id": entry["Id"]})
            return {"Successful": successful, "Failed": failed}

        return self.retries.call("ChangeMessageVisibilityBatch", self.latency.sqs, change)


class SimDynamoClient:
    """boto3's low-level DynamoDB client over the model: its answers, its errors, its retries."""

    def __init__(self, model: DynamoModel, retries: BotocoreRetries, latency: Latency) -> None:
        self.model = model
        self.retries = retries
        self.latency = latency

    def _call(self, operation: str, handle: Callable[[], Any]) -> Any:
        def run() -> Any:
            try:
                return handle()
            except DynamoError as error:
                status = 400 if error.code != "InternalServerError" else 500
                raise ModelError(error.code, error.message, status, **error.extra) from None

        return self.retries.call(operation, self.latency.dynamodb, run)

    def put_item(self, **request: Any) -> Any:
        return self._call("PutItem", lambda: self.model.put(request))

    def get_item(self, **request: Any) -> Any:
        return self._call("GetItem", lambda: self.model.get(request))

    def update_item(self, **request: Any) -> Any:
        return self._call("UpdateItem", lambda: self.model.update(request))

    def query(self, **request: Any) -> Any:
        return self._call("Query", lambda: self.model.query(request))

    def batch_get_item(self, **request: Any) -> Any:
        return self._call("BatchGetItem", lambda: self.model.batch_get(request))

    def transact_write_items(self, **request: Any) -> Any:
        """A transaction holds its items from its start to its end: another one touching them
        meanwhile conflicts, as DynamoDB's optimistic concurrency control makes it."""

        def run() -> Any:
            try:
                self.model.lock(
                    request["TransactItems"], self.model.clock() + self.latency.dynamodb
                )
            except DynamoError as error:
                raise ModelError(error.code, error.message, 400, **error.extra) from None
            if self.latency.dynamodb:
                self.retries.sim.sleep(self.latency.dynamodb)
            try:
                return self.model.transact(request)
            except DynamoError as error:
                raise ModelError(error.code, error.message, 400, **error.extra) from None

        return self.retries.call("TransactWriteItems", 0.0, run)


# --- Lambda ------------------------------------------------------------------------------------

Function = Callable[[Any, Callable[[], int]], Any]  # (event, remaining_ms) -> response


@dataclass
class LambdaStats:
    invocations: Counter[str] = field(default_factory=Counter)  # by what invoked it
    errors: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    seconds: float = 0.0  # time invocations ran, for the bill
    async_retries: int = 0
    concurrent: int = 0
    peak_concurrent: int = 0


class LambdaModel:
    """One function, invoked asynchronously (by S3, by EventBridge) and by an SQS event source
    mapping."""

    ASYNC_RETRY_DELAYS = (60.0, 120.0)

    def __init__(
        self,
        sim: Simulation,
        sqs: SqsModel,
        function: Function,
        *,
        timeout: float,
        latency: Latency,
        dead_letter: Queue,
    ) -> None:
        self.sim = sim
        self.sqs = sqs
        self.function = function
        self.timeout = timeout
        self.latency = latency
        self.dead_letter = dead_letter
        self.stats = LambdaStats()

    def _invoke(self, kind: str, event: Any) -> tuple[bool, Any]:
        """Run the function in its own process, stopped at the timeout: (succeeded, answer)."""
        caller = self.sim.current
        self.stats.invocations[kind] += 1
        self.stats.concurrent += 1
        self.stats.peak_concurrent = max(self.stats.peak_concurrent, self.stats.concurrent)
        started = self.sim.now
        outcome: dict[str, Any] = {}

        def remaining_ms() -> int:
            return int((self.timeout - (self.sim.now - started)) * 1000)

        def run() -> None:
            self.sim.sleep(self.latency.invoke)
            try:
                outcome["answer"] = self.function(event, remaining_ms)
            except Exception as error:  # Lambda reports whatever the handler raises
                outcome["error"] = error
            finally:
                self.sim.wake(caller)

        worker = self.sim.spawn(run, name=f"lambda-{kind}")

        def stop() -> None:
            if not worker.finished:
                outcome["error"] = TimeoutError(f"Task timed out after {self.timeout:.2f} seconds")
                self.stats.timeouts += 1
                self.sim.kill(worker)
                self.sim.wake(caller)

        self.sim.call_at(started + self.timeout, stop)
        self.sim.suspend()
        self.stats.concurrent -= 1
        self.stats.seconds += self.sim.now - started
        if "error" in outcome:
            self.stats.errors[kind] += 1
            return False, outcome["error"]
        return True, outcome.get("answer")

    # --- asynchronous invocation: S3, EventBridge ----------------------------------------------

    def deliver(self, event: Any, at: float, kind: str = "s3") -> None:
        self.sim.spawn(self._async_invocation, event, kind, at=at, name=f"{kind}-delivery")

    def _async_invocation(self, event: Any, kind: str) -> None:
        error: Any = None
        for attempt in range(1 + len(self.ASYNC_RETRY_DELAYS)):
            if attempt:
                self.stats.async_retries += 1
                self.sim.sleep(self.ASYNC_RETRY_DELAYS[attempt - 1])
            succeeded, error = self._invoke(kind, event)
            if succeeded:
                return
        record = {
            "version": "1.0",
            "requestContext": {
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 1 + len(self.ASYNC_RETRY_DELAYS),
            },
            "requestPayload": event,
            "responsePayload": {
                "errorMessage": str(error),
                "errorType": type(error).__name__,
            },
        }
        self.sqs.send(self.dead_letter, json.dumps(record, ensure_ascii=False))

    # --- SQS -> Lambda, through an event source mapping ---------------------------------------

    def map_queue(
        self,
        queue: Queue,
        *,
        maximum_concurrency: int,
        batch_size: int = 10,
        batching_window: float = 0.0,
    ) -> None:
        for number in range(maximum_concurrency):
            self.sim.spawn(
                self._poller, queue, batch_size, batching_window, name=f"poller-{number}"
            )

    def _poller(self, queue: Queue, batch_size: int, batching_window: float) -> None:
        while True:
            messages = self._gather(queue, batch_size, batching_window)
            receipts = {message.message_id: message.receipt for message in messages}
            succeeded, answer = self._invoke("backlog", self._sqs_event(queue, messages))
            if not succeeded:
                continue  # the whole batch comes back after the visibility timeout
            failures = {
                item.get("itemIdentifier")
                for item in (answer or {}).get("batchItemFailures") or []
                if isinstance(item, dict)
            }
            if not failures <= set(receipts):
                continue  # an invalid answer fails the whole batch
            done = [
                receipt for message_id, receipt in receipts.items() if message_id not in failures
            ]
            for start in range(0, len(done), 10):  # DeleteMessageBatch takes 10 at a time
                self.sqs.calls["DeleteMessageBatch"] += 1
                for receipt in done[start : start + 10]:
                    self.sqs.delete(queue, receipt)

    def _gather(self, queue: Queue, batch_size: int, batching_window: float) -> list[Message]:
        """A long poll (up to 20 s, answered as soon as a message is visible), then the rest of
        the batching window, which starts with the first message, or until the batch is full."""
        messages: list[Message] = []
        window_ends: float | None = None
        while True:
            if self.latency.sqs:
                self.sim.sleep(self.latency.sqs)
            messages += self.sqs.receive(queue, batch_size - len(messages))
            if messages and window_ends is None:
                window_ends = self.sim.now + batching_window
            if len(messages) >= batch_size or (
                window_ends is not None and self.sim.now >= window_ends
            ):
                return messages
            if window_ends is None:
                self.sqs.wait(queue, 20.0)
            else:
                self.sim.sleep(window_ends - self.sim.now)

    def _sqs_event(self, queue: Queue, messages: list[Message]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": message.message_id,
                    "receiptHandle": message.receipt,
                    "body": message.body,
                    "attributes": {
                        "ApproximateReceiveCount": str(message.receive_count),
                        "SentTimestamp": str(int((EPOCH + message.sent_at) * 1000)),
                        "ApproximateFirstReceiveTimestamp": str(
                            int((EPOCH + (message.first_received_at or 0)) * 1000)
                        ),
                    },
                    "messageAttributes": message.attributes,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue.arn,
                    "awsRegion": REGION,
                }
                for message in messages
            ]
        }


__all__ = [
    "EPOCH",
    "Behaviour",
    "BotocoreRetries",
    "DynamoModel",
    "EcsModel",
    "EventBus",
    "Fault",
    "Identity",
    "LambdaModel",
    "Latency",
    "Process",
    "Queue",
    "SimDynamoClient",
    "SimEcsClient",
    "SimSqsClient",
    "SqsModel",
    "TokenBucket",
]
