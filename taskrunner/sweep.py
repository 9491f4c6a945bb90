"""The sweep, once a minute (an EventBridge schedule): what events cannot be trusted to do.

- Tasks under way are asked after (DescribeTasks): a stop whose event was lost is settled as
  the event would have; a task now running is marked running; one running longer than
  taskTimeoutMinutes is stopped (StopTask, saying why), and its stop counts as a timeout.
- A claim whose RunTask answer never came is asked again with the same clientToken, which
  finds the task if ECS started it, or starts it.
- A job waiting longer than the wait limit fails with that reason.
- A failure whose report could not be sent is sent.
- Then the free slots are filled: a capacity shortage that passed, a raised cap, a retry whose
  delay is over.
- Metrics for the dashboard and the backlog alarm, every minute, also when nothing waits: a
  sweep that stopped running leaves the alarm without data, which it counts as breaching.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import job_record
import reports
from botocore.exceptions import BotoCoreError, ClientError
from job_record import Job, Stop
from job_store import Conflict, JobStore, StoreError
from retry_policy import LOST_STOP, TIMEOUT_REASON
from runner_settings import RunnerSettings
from scheduler import Scheduler
from services import Services
from task_events import TaskState, record_stop, task_state

logger = logging.getLogger("taskrunner")

SCHEDULE_DETAIL_TYPE = "Scheduled Event"
DESCRIBE_TASKS_PAGE = 100  # DescribeTasks's limit
# A claim with no task ARN this long after it was made lost its answer (or its invocation).
RESUME_AFTER_SECONDS = 60.0
# ECS keeps a stopped task describable for at least an hour; an attempt it no longer knows,
# this long after it was claimed, stopped unseen: its outcome is lost, and it is retried.
VANISHED_AFTER_SECONDS = 2 * 3600.0
# A failure not reported this long after it happened is the sweep's to report (before, the
# invocation that failed it may still be sending).
REPORT_AFTER_SECONDS = 60.0
WAIT_TIMEOUT_BATCH = 100  # jobs failed per sweep for waiting too long; the next sweep goes on


def is_sweep_event(event: object) -> bool:
    return isinstance(event, Mapping) and event.get("detail-type") == SCHEDULE_DETAIL_TYPE


def report_due(job: Job, now: float) -> bool:
    """A failure no invocation reported is the sweep's to report, a minute after it failed or
    after another sweep took it on (and so may still be sending it). Pure."""
    if job.state != "failed" or job.reported:
        return False
    since = max(job.finished_at or 0.0, job.report_taken_at or 0.0)
    return now - since >= REPORT_AFTER_SECONDS


Action = Literal["none", "settle", "running", "stop", "resume", "vanished"]


@dataclass(frozen=True)
class Look:
    """What ECS said of one job's task: described, unknown (MISSING), or not asked."""

    task: TaskState | None = None
    missing: bool = False


def decide(job: Job, look: Look, now: float, timeout_seconds: int | None) -> Action:
    """What the sweep does for a job holding a slot. Pure."""
    attempt = job.current
    if attempt is None:
        return "none"
    if attempt.task_arn is None:
        return "resume" if now - attempt.claimed_at >= RESUME_AFTER_SECONDS else "none"
    task = look.task
    if task is None:
        vanished = look.missing and now - attempt.claimed_at >= VANISHED_AFTER_SECONDS
        return "vanished" if vanished else "none"
    if task.last_status == "STOPPED":
        return "settle"
    started = task.stop.started_at or attempt.started_at
    overdue = (
        timeout_seconds is not None and started is not None and now - started > timeout_seconds
    )
    if overdue:
        return "stop"  # again each sweep while it runs: a StopTask is idempotent
    return "running" if task.last_status == "RUNNING" and job.state == "starting" else "none"


class Sweep:
    def __init__(
        self,
        settings: RunnerSettings,
        services: Services,
        *,
        remaining_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.store: JobStore = services.job_store(settings)
        self.scheduler = Scheduler(self.store, settings, services, remaining_ms=remaining_ms)
        self.reporter = reports.Reporter(self.store, settings, services)
        self.done: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    def run(self) -> dict[str, int]:
        now = self.services.clock()
        jobs = self.store.needing_sweep()
        for job in jobs:
            if report_due(job, now):
                self.report(job, now)
        active = [job for job in jobs if job.holds_slot]
        looks = self.look(active)
        for job in active:
            assert job.current is not None
            self.act(job, looks.get(job.current.task_arn or "", Look()), now)
        due = self.retries_due(now)
        self.fail_overdue(self.overdue(now), now)
        # The fill reads as many of the oldest waiting as it has slots for (none when all are
        # taken), not a sweep's batch: during a big batch that is most minutes. A job failed
        # just now may still be listed by the lagging index; its claim fails on the version.
        report = self.scheduler.fill(due)
        self.done["started"] = len(report.started)
        self.measure(now, len(active), report.listed)
        return self.done

    def overdue(self, now: float) -> list[Job]:
        """The oldest waiting jobs that may have waited past the limit: those ready before it
        (a job waits at least since it was ready). Usually none, read in four empty queries."""
        try:
            return self.store.oldest_waiting(
                ready_by=now - self.settings.wait_timeout_seconds, wanted=WAIT_TIMEOUT_BATCH
            )
        except StoreError as error:
            logger.warning(json.dumps({"sweep": "waiting jobs unreadable", "error": str(error)}))
            return []

    def look(self, jobs: Iterable[Job]) -> dict[str, Look]:
        """task ARN -> what DescribeTasks says of it; a failed call says nothing (next minute)."""
        arns = sorted(
            {job.current.task_arn for job in jobs if job.current and job.current.task_arn}
        )
        looks: dict[str, Look] = {}
        for start in range(0, len(arns), DESCRIBE_TASKS_PAGE):
            try:
                answer = self.services.ecs.describe_tasks(
                    cluster=self.settings.cluster_arn,
                    tasks=arns[start : start + DESCRIBE_TASKS_PAGE],
                )
            except (ClientError, BotoCoreError) as error:
                logger.warning(json.dumps({"sweep": "DescribeTasks failed", "error": str(error)}))
                continue
            for task in answer.get("tasks", []):
                state = task_state(task, self.settings.container_name)
                looks[state.task_arn] = Look(task=state)
            for failure in answer.get("failures", []):
                if failure.get("reason") == "MISSING" and failure.get("arn"):
                    looks[failure["arn"]] = Look(missing=True)
        return looks

    def act(self, job: Job, look: Look, now: float) -> None:
        attempt = job.current
        assert attempt is not None
        action = decide(job, look, now, self.settings.task_timeout_seconds)
        try:
            if action == "settle" and look.task is not None:
                self.settle(job, look.task.stop, "settled")
            elif action == "running" and look.task is not None:
                after = job_record.running(
                    job, attempt.number, started_at=look.task.stop.started_at, task_arn=None
                )
                self.store.apply(job, after)
                self._count("running")
            elif action == "stop":
                self.stop_overdue(job)
            elif action == "resume":
                self.resume(job)
            elif action == "vanished":
                gone = Stop(
                    task_arn=attempt.task_arn or "",
                    stop_code=LOST_STOP,
                    stopped_reason="ECS no longer knows the task and no stop was seen: its "
                    "outcome is lost",
                    exit_code=None,
                    container_reason=None,
                    started_at=attempt.started_at,
                    stopped_at=now,
                )
                self.settle(job, gone, "vanished")
        except (Conflict, StoreError) as error:
            # Another invocation wrote the job meanwhile, or the table failed: next minute.
            logger.warning(json.dumps({"job": job.location, "sweep": action, "error": str(error)}))

    def report(self, job: Job, now: float) -> None:
        """Send a failure's report that no invocation sent, taking it on first: a sweep running
        beside this one (a schedule's event delivered twice) then finds the record changed."""
        try:
            taken = self.store.apply(job, job_record.report_taken(job, now=now))
        except (Conflict, StoreError) as error:
            # Another sweep took it on, or the table failed: it is sent once, or next minute.
            logger.warning(
                json.dumps({"job": job.location, "sweep": "report", "error": str(error)})
            )
            return
        self.reporter.failure(taken)
        self._count("reported")

    def resume(self, job: Job) -> None:
        """Ask ECS again, with the same token, for a claim whose answer was lost; only if the
        record still says so. The index may lag: the claim's own invocation may have settled
        it since, and another claim's task may be starting; this one's token would start a
        second task."""
        attempt = job.current
        assert attempt is not None
        fresh = self.store.reread(job)
        current = fresh.current if fresh is not None else None
        if (
            fresh is None
            or fresh.state != "starting"
            or current is None
            or current.claim != attempt.claim
            or current.task_arn is not None
        ):
            self._count("resume not needed")
            return
        self.scheduler.request(fresh, resumed=True)
        self._count("resumed")

    def settle(self, job: Job, stop: Stop, counted_as: str) -> None:
        attempt = job.current
        assert attempt is not None
        settled = record_stop(
            self.store, self.settings, self.services, job, number=attempt.number, stop=stop
        )
        if settled is not None:
            self._count(counted_as)

    def stop_overdue(self, job: Job) -> None:
        attempt = job.current
        assert attempt is not None
        assert attempt.task_arn is not None
        minutes = (self.settings.task_timeout_seconds or 0) // 60
        try:
            self.services.ecs.stop_task(
                cluster=self.settings.cluster_arn,
                task=attempt.task_arn,
                reason=f"{TIMEOUT_REASON} ({minutes} min)"[:255],
            )
        except (ClientError, BotoCoreError) as error:
            logger.warning(json.dumps({"job": job.location, "StopTask": str(error)}))
            return
        if attempt.stop_requested != "timeout":
            self.store.apply(job, job_record.stop_requested(job, attempt.number, "timeout"))
        self._count("timed out")

    def retries_due(self, now: float) -> list[Job]:
        """Retries whose delay is over go back to their place among those waiting."""
        try:
            delayed = self.store.due_retries(by=now, wanted=WAIT_TIMEOUT_BATCH)
        except StoreError as error:
            logger.warning(json.dumps({"sweep": "retries unreadable", "error": str(error)}))
            return []
        due: list[Job] = []
        for job in delayed:
            try:
                due.append(self.store.apply(job, job_record.due(job, now=now)))
            except (Conflict, StoreError, job_record.TransitionError):
                continue  # another sweep promoted it, or the index was stale: next minute
            self._count("retry due")
        return due

    def fail_overdue(self, waiting: Iterable[Job], now: float) -> None:
        """Jobs that waited longer than the limit fail, saying so."""
        limit = self.settings.wait_timeout_seconds
        for job in waiting:
            since = job.waiting_since
            if since is None or since > now - limit:
                continue
            reason = (
                f"waited {(now - since) / 3600:.1f} h for a task slot, longer than "
                f"the limit of {limit / 3600:.1f} h (waitTimeoutMinutes)"
            )
            try:
                written = self.store.apply(job, job_record.failed(job, now=now, reason=reason))
            except (Conflict, StoreError, job_record.TransitionError):
                continue  # claimed meanwhile, or the index was stale
            self.store.count(failed=1)
            self.reporter.failure(written)
            self._count("waited too long")

    def measure(self, now: float, active: int, listed: list[Job] | None) -> None:
        """The minute's gauges: jobs waiting and under way, and the oldest wait (from the
        fill's list of the oldest waiting, or, if it read none, the oldest alone)."""
        try:
            stats = self.store.stats()
            waiting_jobs = (
                listed if listed is not None else self.store.oldest_waiting(ready_by=now, wanted=1)
            )
        except StoreError as error:
            logger.warning(json.dumps({"sweep": "gauges unreadable", "error": str(error)}))
            return
        waited = max(
            (now - since for job in waiting_jobs if (since := job.waiting_since) is not None),
            default=0.0,
        )
        waiting = max(0, stats.in_progress - active)
        # The oldest wait always: the backlog alarm takes its absence for a sweep that stopped.
        # The counts only while there are some: CloudWatch bills a metric for every hour it
        # receives data, and an idle stack should cost next to nothing.
        gauges: dict[str, float] = {"OldestWaitSeconds": round(waited)}
        if waiting or active:
            gauges |= {"JobsWaiting": waiting, "JobsRunning": active}
        self.reporter.metric(gauges, units={"OldestWaitSeconds": "Seconds"})


def handle_sweep(
    event: Mapping[str, Any],
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> dict[str, int]:
    done = Sweep(settings, services, remaining_ms=remaining_ms).run()
    logger.info(json.dumps({"sweep": done}))
    return done
