"""What the system knows of one upload: its job record, and every way that record may change.

Pure: no AWS calls, no clock. A transition takes a record (and what happened) and returns the
new record; `job_store.apply` is the only place that writes one, with a condition on the
record's `version`, so that two invocations acting on the same job cannot both succeed.

States: waiting (for a slot, oldest first) -> starting (a slot is taken, RunTask asked or
answered) -> running (ECS says RUNNING) -> succeeded or failed; or back to waiting for a retry.
A job holds one of the task slots exactly while it is starting or running.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

State = Literal["waiting", "starting", "running", "succeeded", "failed"]
STATES: tuple[State, ...] = ("waiting", "starting", "running", "succeeded", "failed")
ACTIVE_STATES: frozenset[State] = frozenset({"starting", "running"})
FINAL_STATES: frozenset[State] = frozenset({"succeeded", "failed"})
# The history a record keeps: the latest attempts; older ones are counted, not kept, so a
# job redriven again and again does not grow its record towards DynamoDB's 400 KB limit.
KEPT_ATTEMPTS = 20
MAX_TEXT = 1024  # ECS's stop reasons and container reasons, cut to this many characters

if TYPE_CHECKING:
    # mypy checks each change's name and type as it checks dataclasses.replace's.
    from dataclasses import replace as replace  # noqa: PLC0414 - exported, as the one below
else:

    def replace(record: Any, /, **changes: Any) -> Any:
        """dataclasses.replace for the records here, made by `_made`."""
        unknown = changes.keys() - type(record).__dataclass_fields__.keys()
        if unknown:
            raise TypeError(f"{type(record).__name__} has no field {min(unknown)!r}")
        return _made(type(record), record.__dict__, changes)


def _made(kind: type, *layers: Mapping[str, Any]) -> Any:
    """A record of `kind` whose fields are `layers` merged, later ones winning; for the records
    here (frozen, no __post_init__, no init=False field). Their generated __init__ sets each of
    a Job's 24 fields through object.__setattr__: every transition copies a job and its attempt,
    the store decodes every record it reads, a sweep does both hundreds of times and the
    simulation hundreds of thousands, and this is eight times faster."""
    record: Any = object.__new__(kind)
    for layer in layers:
        record.__dict__.update(layer)
    return record


def clip(text: str | None) -> str | None:
    return None if text is None else text[:MAX_TEXT]


@dataclass(frozen=True)
class Attempt:
    """One try at running the job: a RunTask with its own clientToken, and what became of it."""

    number: int  # 1, 2, ...: the JOB_ATTEMPT the task is started with
    claim: int  # the claim that made it; its clientToken is derived from this
    provider: str  # the capacity provider asked for
    claimed_at: float
    task_arn: str | None = None
    started_at: float | None = None  # the container started (ECS startedAt)
    stopped_at: float | None = None
    stop_code: str | None = None
    stopped_reason: str | None = None
    exit_code: int | None = None
    container_reason: str | None = None
    cause: str | None = None  # how the stop was read: succeeded, spot-interruption, ...
    stop_requested: str | None = None  # "timeout" once the sweep asked ECS to stop it

    @property
    def task_id(self) -> str | None:
        return None if self.task_arn is None else self.task_arn.rsplit("/", 1)[-1]

    def fields(self) -> dict[str, object]:
        """The attempt by the names its record and its reports give it (None: not known)."""
        return {
            "attempt": self.number,
            "claim": self.claim,
            "capacityProvider": self.provider,
            "claimedAt": self.claimed_at,
            "taskArn": self.task_arn,
            "startedAt": self.started_at,
            "stoppedAt": self.stopped_at,
            "stopCode": self.stop_code,
            "stoppedReason": self.stopped_reason,
            "exitCode": self.exit_code,
            "containerReason": self.container_reason,
            "cause": self.cause,
            "stopRequested": self.stop_requested,
        }


@dataclass(frozen=True)
class Job:
    """One upload's job. `job_id` tells uploads of the same key apart (a version, a sequencer)."""

    bucket: str
    key: str
    job_id: str
    state: State
    version: int  # bumped by every write; a write expects the version it read
    recorded_at: float
    # Its place among those waiting: when it first became ready, kept while it starts and
    # through its retries, so that an attempt ECS refuses, or a retry, goes back to its place.
    ready_at: float | None = None
    retry_at: float | None = None  # while a retry's delay runs: when it may start again
    version_id: str | None = None
    uploaded_at: str | None = None  # the S3 event's eventTime, as S3 wrote it
    size: int | None = None
    attempts: tuple[Attempt, ...] = ()
    attempt_count: int = 0  # attempts ever made, including those no longer kept
    claims: int = 0  # claims ever made: every RunTask token is new
    budget_from: int = 0  # attempts before the last redrive, which the retry limit ignores
    next_provider: str | None = None  # the provider the next attempt asks for, if not the default
    active_since: float | None = None
    finished_at: float | None = None
    reason: str | None = None  # why it failed, or why it last waits again
    reported: bool = True  # a failure is reported once; False until the report was sent
    # When a sweep took an unsent report on: another sweep running meanwhile leaves it alone.
    report_taken_at: float | None = None
    redrives: int = 0
    last_redrive_of: str | None = None

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def holds_slot(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def current(self) -> Attempt | None:
        """The attempt under way (starting or running), or the last one."""
        return self.attempts[-1] if self.attempts else None

    @property
    def attempts_in_budget(self) -> int:
        """Attempts that count against the retry limit: those since the last redrive."""
        return self.attempt_count - self.budget_from

    @property
    def waiting_since(self) -> float | None:
        """When it last began to wait: recorded, or its last attempt stopped."""
        if self.state != "waiting":
            return None
        stopped = self.current.stopped_at if self.current is not None else None
        return max(filter(None, (self.ready_at, stopped)), default=None)

    @property
    def needs_sweep(self) -> bool:
        """What the sweep must look at: tasks under way, and failures not yet reported."""
        return self.holds_slot or (self.state == "failed" and not self.reported)


Record = TypeVar("Record", Attempt, Job)


def from_fields(kind: type[Record], values: Mapping[str, Any]) -> Record:
    """`kind(**values)`, made by `_made`. TypeError naming a field missing, or not the record's."""
    defaults, required, known = _FIELDS[kind]
    if not required <= values.keys() <= known:
        wrong = sorted(required - values.keys()) or sorted(values.keys() - known)
        raise TypeError(f"{kind.__name__} needs {sorted(required)}, of {sorted(known)}: {wrong}")
    made: Record = _made(kind, defaults, values)
    return made


def _fields_of(kind: type) -> tuple[dict[str, Any], frozenset[str], frozenset[str]]:
    """A record's defaults, the fields it has none for, and all its fields."""
    every = dataclasses.fields(kind)
    defaults = {f.name: f.default for f in every if f.default is not dataclasses.MISSING}
    required = frozenset(f.name for f in every if f.default is dataclasses.MISSING)
    return defaults, required, frozenset(f.name for f in every)


_FIELDS = {kind: _fields_of(kind) for kind in (Attempt, Job)}


def new_job(
    *,
    bucket: str,
    key: str,
    job_id: str,
    now: float,
    version_id: str | None = None,
    uploaded_at: str | None = None,
    size: int | None = None,
) -> Job:
    """A job for an upload seen for the first time: waiting from now, behind those before it."""
    return Job(
        bucket=bucket,
        key=key,
        job_id=job_id,
        state="waiting",
        version=0,
        recorded_at=now,
        ready_at=now,
        version_id=version_id,
        uploaded_at=uploaded_at,
        size=size,
    )


class TransitionError(ValueError):
    """A transition that does not apply to the record as it is (a stale or duplicate input)."""


def _attempt(job: Job, number: int) -> Attempt:
    current = job.current
    if current is None or current.number != number:
        raise TransitionError(f"{job.location}: attempt {number} is not the current attempt")
    return current


def _with_current(job: Job, attempt: Attempt) -> tuple[Attempt, ...]:
    return (*job.attempts[:-1], attempt)


def retry_pending(job: Job, *, now: float) -> bool:
    """A retry still waiting out its delay: no attempt may be claimed for it yet."""
    return job.retry_at is not None and job.retry_at > now


def claim(job: Job, *, now: float, default_provider: str) -> Job:
    """Take a slot for the next attempt: waiting -> starting."""
    if job.state != "waiting":
        raise TransitionError(f"{job.location} is {job.state}, not waiting")
    if retry_pending(job, now=now):
        raise TransitionError(f"{job.location} waits out its retry's delay")
    attempt = Attempt(
        number=job.attempt_count + 1,
        claim=job.claims + 1,
        provider=job.next_provider or default_provider,
        claimed_at=now,
    )
    return replace(
        job,
        state="starting",
        retry_at=None,
        active_since=now,
        attempts=(*job.attempts, attempt)[-KEPT_ATTEMPTS:],
        attempt_count=attempt.number,
        claims=attempt.claim,
    )


def task_started(job: Job, number: int, task_arn: str) -> Job:
    """RunTask answered with the attempt's task."""
    attempt = _attempt(job, number)
    if job.state not in ACTIVE_STATES:
        raise TransitionError(f"{job.location} is {job.state}: its attempt {number} is over")
    if attempt.task_arn == task_arn:
        return job
    return replace(job, attempts=_with_current(job, replace(attempt, task_arn=task_arn)))


def not_started(job: Job, number: int, *, now: float, reason: str) -> Job:
    """ECS started no task for the attempt ("not now"): back to waiting, in its place (its
    `ready_at` is unchanged). The attempt is undone, not counted against the retry limit; its
    claim (and so its token) is not reused.
    """
    _attempt(job, number)
    if job.state != "starting":
        raise TransitionError(f"{job.location} is {job.state}, not starting")
    return replace(
        job,
        state="waiting",
        active_since=None,
        attempts=job.attempts[:-1],
        attempt_count=job.attempt_count - 1,
        reason=clip(reason),
    )


def running(job: Job, number: int, *, started_at: float | None, task_arn: str | None) -> Job:
    """ECS says the attempt's task runs."""
    attempt = _attempt(job, number)
    if job.state not in ACTIVE_STATES:
        raise TransitionError(f"{job.location} is {job.state}: its attempt {number} is over")
    updated = replace(
        attempt,
        task_arn=attempt.task_arn or task_arn,
        started_at=attempt.started_at or started_at,
    )
    if job.state == "running" and updated == attempt:
        return job
    return replace(job, state="running", attempts=_with_current(job, updated))


def stop_requested(job: Job, number: int, why: str) -> Job:
    """The sweep asked ECS to stop the attempt's task (`why`: "timeout")."""
    attempt = _attempt(job, number)
    if attempt.stop_requested == why:
        return job
    return replace(job, attempts=_with_current(job, replace(attempt, stop_requested=why)))


@dataclass(frozen=True)
class Stop:
    """What ECS said about a stopped task (from its event, or DescribeTasks)."""

    task_arn: str
    stop_code: str | None
    stopped_reason: str | None
    exit_code: int | None
    container_reason: str | None
    started_at: float | None
    stopped_at: float | None
    provider: str | None = None


@dataclass(frozen=True)
class Next:
    """What follows a stopped attempt: done, another attempt (after a delay), or failed."""

    outcome: Literal["succeeded", "retry", "failed"]
    cause: str
    reason: str
    delay: float = 0.0
    provider: str | None = None


def stopped(job: Job, number: int, stop: Stop, after: Next, *, now: float) -> Job:
    """The attempt's task stopped: record how, then succeed, wait for a retry, or fail."""
    attempt = _attempt(job, number)
    if job.state not in ACTIVE_STATES:
        raise TransitionError(f"{job.location} is {job.state}: attempt {number} already ended")
    ended = replace(
        attempt,
        task_arn=attempt.task_arn or stop.task_arn,
        provider=stop.provider or attempt.provider,
        started_at=attempt.started_at or stop.started_at,
        stopped_at=stop.stopped_at or now,
        stop_code=stop.stop_code,
        stopped_reason=clip(stop.stopped_reason),
        exit_code=stop.exit_code,
        container_reason=clip(stop.container_reason),
        cause=after.cause,
    )
    done = replace(job, attempts=_with_current(job, ended), active_since=None)
    if after.outcome == "succeeded":
        return replace(done, state="succeeded", finished_at=now, reason=None, reported=True)
    if after.outcome == "retry":
        # It keeps its place (`ready_at`): once its delay is over it goes before the jobs that
        # came after it, not behind a backlog that grew while it ran.
        return replace(
            done,
            state="waiting",
            retry_at=now + after.delay,
            # Once on FARGATE for a job that must finish, it stays there.
            next_provider=after.provider or job.next_provider,
            reason=clip(after.reason),
        )
    return replace(done, state="failed", finished_at=now, reason=clip(after.reason), reported=False)


def failed(job: Job, *, now: float, reason: str) -> Job:
    """The job ends without its task having run: waiting cannot mend it (or it waited too long).

    From starting, the attempt that ECS refused is dropped: no task of it exists.
    """
    if job.state in FINAL_STATES:
        raise TransitionError(f"{job.location} is already {job.state}")
    attempts, count = job.attempts, job.attempt_count
    if job.state == "starting" and job.current is not None and job.current.task_arn is None:
        attempts, count = job.attempts[:-1], job.attempt_count - 1
    return replace(
        job,
        state="failed",
        active_since=None,
        attempts=attempts,
        attempt_count=count,
        finished_at=now,
        reason=clip(reason),
        reported=False,
    )


def due(job: Job, *, now: float) -> Job:
    """A retry's delay is over: it waits in its place with the others."""
    if job.state != "waiting" or job.retry_at is None or retry_pending(job, now=now):
        raise TransitionError(f"{job.location} has no retry due")
    return replace(job, retry_at=None)


def report_taken(job: Job, *, now: float) -> Job:
    """A sweep sends the failure's report: written first, so that an overlapping sweep, which
    read the same record, finds it changed and sends nothing."""
    if job.state != "failed" or job.reported:
        raise TransitionError(f"{job.location} is {job.state}: no report to send")
    return replace(job, report_taken_at=now)


def reported(job: Job) -> Job:
    """Its failure was sent to the failed-jobs or dead-letter queue."""
    if job.state != "failed":
        raise TransitionError(f"{job.location} is {job.state}: nothing to report")
    return replace(job, reported=True, report_taken_at=None)


def redriven(job: Job, *, now: float, redrive_of: str) -> Job:
    """A person replays a failed job: it waits again, with a fresh retry budget."""
    if job.state != "failed":
        raise TransitionError(f"{job.location} is {job.state}, not failed: nothing to redrive")
    if job.last_redrive_of == redrive_of:
        raise TransitionError(f"{job.location} was redriven from {redrive_of} already")
    return replace(
        job,
        state="waiting",
        ready_at=now,
        retry_at=None,
        finished_at=None,
        reason=None,
        reported=True,
        report_taken_at=None,
        next_provider=None,
        budget_from=job.attempt_count,
        redrives=job.redrives + 1,
        last_redrive_of=redrive_of,
    )


def written_over(before: Job, after: Job) -> Job:
    """`after` as a write over `before` records it: every write bumps the version, and is made
    on the condition that the record is still at `before`'s."""
    return replace(after, version=before.version + 1)


def slot_change(before: Job | None, after: Job) -> int:
    """+1 when the write takes a slot, -1 when it frees one, else 0."""
    held_before = before is not None and before.holds_slot
    return int(after.holds_slot) - int(held_before)
