"""A fake ECS endpoint on 127.0.0.1: RunTask and DescribeTasks, with injectable faults.

moto starts tasks but ignores `clientToken` and never answers with `failures`; this fake does
both, so tests can drive the runner (or the whole pipeline) through botocore's real HTTP,
retry and timeout code. Usage::

    with running_fake_ecs() as fake:
        fake.inject(Fault.throttling(), times=3)                  # the next 3 RunTask calls
        fake.inject(Fault.failure("RESOURCE:MEMORY"), when=lambda call: call.s3_key == "big")
        fake.inject(Fault.delay(2.0))                             # answer late (client timeout)
        fake.inject(Fault.lost())                   # start it, close the connection unanswered
        ecs = fake.client()         # or point boto3 at it: AWS_ENDPOINT_URL_ECS=fake.url
        ...
        fake.started                # clientToken -> task ARN, one entry per token that started
        fake.calls                  # every RunTask call in order, with the fault it got

    # ECS's Fargate launch rate limit, and faults chosen per call by a function of the test's:
    with running_fake_ecs(launch_bucket=LaunchBucket(), fault_policy=plan.fault_for) as fake:
        ...

Behaviour, as in ECS: a RunTask whose clientToken already started a task with the same
parameters answers with that task and starts nothing; with other parameters it answers
ConflictException carrying `resourceIds`. A call matched by a fault rule gets that fault
instead (one rule per call: the first injected rule that matches and has uses left). A delay
fault sleeps, then handles the call normally, so a call the client gave up on still starts
its task, as a real timed-out request may.

With a `LaunchBucket`, a RunTask that would start a task takes a token first and, with none
left, answers ThrottlingException "Rate exceeded" (ECS's documented bucket: burst 100, refilling
20 launches/s). A call answered with an already-started task launches nothing and takes no token.
A `fault_policy` is asked for a fault after the injected rules, for calls none of them matched.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
ACCOUNT = "123456789012"
REGION = "us-east-1"

FaultKind = Literal["error", "failure", "delay", "lost"]
DROPPED = 0  # the status `handle` gives for a call answered by closing the connection


@dataclass(frozen=True)
class Fault:
    """What a RunTask call gets instead of a normal answer. Build with the class methods."""

    kind: FaultKind
    code: str = ""
    message: str = ""
    status: int = 400
    reason: str = ""
    detail: str | None = None
    seconds: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict)  # more members of an error body

    @classmethod
    def throttling(cls) -> Fault:
        """ECS's answer beyond its 20 calls/s: botocore retries it with backoff."""
        return cls("error", code="ThrottlingException", message="Rate exceeded")

    @classmethod
    def error(cls, code: str, message: str = "injected error", status: int = 400) -> Fault:
        """Any error answer, e.g. error("ServerException", status=500) or AccessDeniedException."""
        return cls("error", code=code, message=message, status=status)

    @classmethod
    def conflict(cls, resource_ids: list[str] | None = None) -> Fault:
        """ConflictException as ECS sends for a reused clientToken with other parameters."""
        return cls(
            "error",
            code="ConflictException",
            message="The clientToken is already in use with different parameters",
            extra={"resourceIds": resource_ids or []},
        )

    @classmethod
    def failure(cls, reason: str, detail: str | None = None) -> Fault:
        """HTTP 200 with no task and a `failures` entry (e.g. RESOURCE:MEMORY, AGENT)."""
        return cls("failure", reason=reason, detail=detail)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally after `seconds`: longer than the client's read timeout times it out."""
        return cls("delay", seconds=seconds)

    @classmethod
    def lost(cls) -> Fault:
        """Handle the call, then close the connection unanswered: the client loses the answer
        as it loses a timed-out one (botocore retries, then raises), without the wait."""
        return cls("lost")


class LaunchBucket:
    """ECS's Fargate task-launch rate limit: `burst` tokens, refilling `rate` per second.

    `clock` (seconds, monotonic) may run faster than real time, to scale a test's timeline.
    Not thread-safe by itself: the fake calls it under its lock.
    """

    def __init__(
        self, burst: float = 100, rate: float = 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.refused = 0  # launches answered with ThrottlingException

    def take(self) -> bool:
        """One launch token if there is one; False (and counted) if the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.refused += 1
        return False


@dataclass
class RunTaskCall:
    """One RunTask request as received, and what the fake did with it."""

    request: dict[str, Any]
    fault: Fault | None = None
    task_arn: str | None = None  # the task answered with (new or, for a repeated token, old)
    rate_limited: bool = False  # answered ThrottlingException by the launch bucket

    @property
    def client_token(self) -> str | None:
        token = self.request.get("clientToken")
        return token if isinstance(token, str) else None

    @property
    def environment(self) -> dict[str, str]:
        """The first container override's environment, name -> value."""
        overrides = self.request.get("overrides", {}).get("containerOverrides") or [{}]
        return {pair["name"]: pair["value"] for pair in overrides[0].get("environment", [])}

    @property
    def s3_key(self) -> str | None:
        return self.environment.get("S3_KEY")


@dataclass
class _Rule:
    fault: Fault
    remaining: int | None  # None: every matching call
    when: Callable[[RunTaskCall], bool] | None


FaultPolicy = Callable[[RunTaskCall], Fault | None]


class FakeEcs:
    """State and controls of one running fake; see the module docstring."""

    def __init__(
        self,
        *,
        launch_bucket: LaunchBucket | None = None,
        fault_policy: FaultPolicy | None = None,
    ) -> None:
        self.url = ""
        self.launch_bucket = launch_bucket
        self._fault_policy = fault_policy  # called under the lock: it must not call the fake
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rules: list[_Rule] = []
        self._calls: list[RunTaskCall] = []
        self._tasks: dict[str, dict[str, Any]] = {}  # task ARN -> task description
        self._by_token: dict[str, tuple[str, dict[str, Any]]] = {}  # token -> (ARN, request)
        self.stop_requests: list[tuple[str, str]] = []  # StopTask calls: (task ARN, reason)

    # --- controls ---------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        *,
        times: int | None = 1,
        when: Callable[[RunTaskCall], bool] | None = None,
    ) -> None:
        """Give `fault` to the next `times` RunTask calls matching `when` (None: forever/all)."""
        with self._lock:
            self._rules.append(_Rule(fault, times, when))

    def clear_faults(self) -> None:
        """No more faults: injected rules and the fault policy (the launch bucket stays)."""
        with self._lock:
            self._rules.clear()
            self._fault_policy = None

    # --- records ----------------------------------------------------------------------------

    @property
    def calls(self) -> list[RunTaskCall]:
        """Every RunTask call so far, in arrival order."""
        with self._lock:
            return list(self._calls)

    @property
    def started(self) -> dict[str, str]:
        """clientToken -> ARN of the one task it started (calls without a token not included)."""
        with self._lock:
            return {token: arn for token, (arn, _) in self._by_token.items()}

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Every task started, in order, as DescribeTasks describes it."""
        with self._lock:
            return list(self._tasks.values())

    def tasks_for(self, key: str) -> set[str]:
        """The ARNs of the distinct tasks started for one S3 key (a repeated token's once)."""
        return {call.task_arn for call in self.calls if call.s3_key == key and call.task_arn}

    def wait_for_tasks(self, count: int, timeout: float = 30.0) -> None:
        """Wait, at most `timeout` seconds, until `count` tasks were started: a delayed
        answer's task starts after its caller gave up on it."""
        deadline = time.monotonic() + timeout
        while len(self.tasks) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.tasks)} tasks started, not {count}")
            self._stopping.wait(0.02)  # not time.sleep: tests record botocore's sleeps

    # --- the API ----------------------------------------------------------------------------

    def handle(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one API call: (HTTP status, JSON body)."""
        if operation == "RunTask":
            return self._run_task(body)
        if operation == "DescribeTasks":
            return self._describe_tasks(body)
        if operation == "StopTask":
            return self._stop_task(body)
        return 400, _error_body("UnknownOperationException", f"the fake has no {operation}")

    def _run_task(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        call = RunTaskCall(request)
        with self._lock:
            self._calls.append(call)
            call.fault = self._take_fault(call)
        fault = call.fault
        if fault is not None and fault.kind == "delay":
            self._stopping.wait(fault.seconds)
        elif fault is not None and fault.kind == "lost":
            self._start(call, request)
            return DROPPED, {}
        elif fault is not None and fault.kind == "error":
            return fault.status, {**_error_body(fault.code, fault.message), **fault.extra}
        elif fault is not None:
            failure = {"arn": request.get("taskDefinition", ""), "reason": fault.reason}
            if fault.detail is not None:
                failure["detail"] = fault.detail
            return 200, {"tasks": [], "failures": [failure]}
        return self._start(call, request)

    def _start(self, call: RunTaskCall, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """RunTask as ECS answers it: the token's task, a new one, or throttled."""
        with self._lock:
            token = call.client_token
            if token is not None and token in self._by_token:
                arn, first_request = self._by_token[token]
                if first_request != request:
                    message = "The clientToken is already in use with different parameters"
                    return 400, {**_error_body("ConflictException", message), "resourceIds": [arn]}
                call.task_arn = arn
                return 200, {"tasks": [self._tasks[arn]], "failures": []}
            if self.launch_bucket is not None and not self.launch_bucket.take():
                call.rate_limited = True
                throttled = Fault.throttling()
                return throttled.status, _error_body(throttled.code, throttled.message)
            task = _task_description(request)
            self._tasks[task["taskArn"]] = task
            if token is not None:
                self._by_token[token] = (task["taskArn"], request)
            call.task_arn = task["taskArn"]
            return 200, {"tasks": [task], "failures": []}

    def _describe_tasks(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            arns = [arn for arn in body.get("tasks", []) if isinstance(arn, str)]
            return 200, {
                "tasks": [self._tasks[arn] for arn in arns if arn in self._tasks],
                "failures": [
                    {"arn": arn, "reason": "MISSING"} for arn in arns if arn not in self._tasks
                ],
            }

    def _stop_task(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        arn = body.get("task")
        reason = str(body.get("reason") or "Task stopped by user")
        with self._lock:
            if arn not in self._tasks:
                return 400, _error_body(
                    "InvalidParameterException", "The referenced task was not found."
                )
            self.stop_requests.append((str(arn), reason))
        # A job that handles SIGTERM exits 143 at once; the fake stops it then.
        return 200, {
            "task": self.finish(str(arn), exit_code=143, stop_code="UserInitiated", reason=reason)
        }

    # --- Fargate's part: tasks run and stop ---------------------------------------------------

    def forget(self, arn: str) -> None:
        """ECS no longer describes the task (it keeps stopped tasks for an hour or so)."""
        with self._lock:
            del self._tasks[arn]

    def run(self, arn: str, at: float | None = None) -> dict[str, Any]:
        """The task's container started."""
        with self._lock:
            task = self._tasks[arn]
            if task["lastStatus"] != "STOPPED":
                task |= {"lastStatus": "RUNNING", "startedAt": at or time.time()}
                task["version"] = task.get("version", 1) + 1
            return dict(task)

    def finish(
        self,
        arn: str,
        *,
        exit_code: int | None = 0,
        stop_code: str = "EssentialContainerExited",
        reason: str = "Essential container in task exited",
        at: float | None = None,
    ) -> dict[str, Any]:
        """The task stopped, as Fargate reports it; a task never started has no exit code."""
        with self._lock:
            task = self._tasks[arn]
            if task["lastStatus"] == "STOPPED":
                return dict(task)
            now = at or time.time()
            (override,) = task["overrides"].get("containerOverrides") or [{"name": "job"}]
            container: dict[str, Any] = {
                "name": override.get("name", "job"),
                "lastStatus": "STOPPED",
            }
            if exit_code is not None:
                container["exitCode"] = exit_code
                task.setdefault("startedAt", now)
            task |= {
                "lastStatus": "STOPPED",
                "desiredStatus": "STOPPED",
                "stopCode": stop_code,
                "stoppedReason": reason,
                "stoppedAt": now,
                "containers": [container],
                "version": task.get("version", 1) + 1,
            }
            return dict(task)

    def state_change(self, arn: str) -> dict[str, Any]:
        """The "ECS Task State Change" event EventBridge delivers for the task as it is now."""
        with self._lock:
            task = dict(self._tasks[arn])
        for name in ("createdAt", "startedAt", "stoppedAt"):
            if isinstance(task.get(name), int | float):
                moment = datetime.datetime.fromtimestamp(task[name], datetime.UTC)
                task[name] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "version": "0",
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": ACCOUNT,
            "region": REGION,
            "resources": [arn],
            "detail": task,
        }

    def _take_fault(self, call: RunTaskCall) -> Fault | None:
        for rule in self._rules:
            if rule.remaining == 0 or (rule.when is not None and not rule.when(call)):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.fault
        return self._fault_policy(call) if self._fault_policy is not None else None

    # --- clients ----------------------------------------------------------------------------

    def client(self, config: Config | None = None) -> ECSClient:
        """A boto3 ECS client for this fake, with dummy credentials (any config, e.g. retries)."""
        return boto3.client(
            "ecs",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # a dummy credential for the fake
            config=config,
        )


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"__type": code, "message": message}


def _task_description(request: Mapping[str, Any]) -> dict[str, Any]:
    cluster = str(request.get("cluster", "default"))
    cluster_name = cluster.rsplit("/", 1)[-1]
    strategy = request.get("capacityProviderStrategy") or [{}]
    return {
        "taskArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster_name}/{uuid.uuid4().hex}",
        "clusterArn": cluster
        if cluster.startswith("arn:")
        else f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}",
        "taskDefinitionArn": request.get("taskDefinition", ""),
        "capacityProviderName": strategy[0].get("capacityProvider", "FARGATE"),
        "lastStatus": "PROVISIONING",
        "desiredStatus": "RUNNING",
        "createdAt": time.time(),
        "version": 1,
        "startedBy": request.get("startedBy", ""),
        "overrides": request.get("overrides", {"containerOverrides": []}),
        "tags": request.get("tags", []),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    # Headers and body go out in two writes: with Nagle's algorithm on, the client's delayed
    # ACK would hold every answer back by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        target = self.headers.get("X-Amz-Target", "")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            status, answer = 400, _error_body("SerializationException", "body is not JSON")
        else:
            status, answer = self.server.fake.handle(target.removeprefix(TARGET_PREFIX), body)
        if status == DROPPED:
            self.close_connection = True
            return
        payload = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left; the call still took effect, as in ECS

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output should show only what the tests print."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a delayed answer never keeps the test process alive
    # Dozens of clients may connect at once (a load test): the default backlog of 5 would make
    # the kernel refuse some connections, failures that are the fake's and not the runner's.
    request_queue_size = 256
    fake: FakeEcs


@contextmanager
def running_fake_ecs(
    *, launch_bucket: LaunchBucket | None = None, fault_policy: FaultPolicy | None = None
) -> Iterator[FakeEcs]:
    """Serve a fresh FakeEcs on 127.0.0.1 (OS-chosen port); always stopped on exit."""
    fake = FakeEcs(launch_bucket=launch_bucket, fault_policy=fault_policy)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        fake._stopping.set()  # wake delayed answers so shutdown does not wait for them
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
