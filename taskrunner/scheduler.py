"""Fill free task slots with the oldest waiting jobs: the one way a job's task is started.

Every event that may free a slot or bring work calls `fill`: an upload (its own job may start
at once), a task that stopped (its slot is free), the sweep (a minute at most after anything
else: a capacity shortage that passed, a lost event, a raised cap). There are no timers: a job
waits exactly until a slot is free for it and it is the oldest ready one.

How many slots there are: `maxConcurrentTasks` if set, and the account's task limit as ECS
last stated it (a quota refusal), remembered for a few minutes and then tried again, so that a
raised quota or other workloads finishing is noticed. The count of slots taken changes in the
same transaction as the job taking or freeing one (job_store): two fills at once cannot both
take the last slot, and a duplicate or late event cannot free one twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import job_record
import reports
from job_record import Job
from job_store import Conflict, Full, JobStore, Slots, StoreError
from runner_settings import RunnerSettings
from services import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, Services
from task_starter import StartAnswer, build_run_task_request, run_task

logger = logging.getLogger("taskrunner")

# The account's limit, once ECS refused a task at it, is trusted this long; then a fill tries
# beyond it again (one refused RunTask each time, if nothing changed).
ACCOUNT_LIMIT_MEMORY_SECONDS = 300.0
# Starts per fill: Fargate's launch bucket holds 100, and a fill must end within the function's
# time. The next event or sweep starts the rest.
MAX_STARTS_PER_FILL = 100
# Candidates beyond the free slots, for claims that lose to another fill.
CANDIDATE_MARGIN = 3
# Passing refusals (throttling, a capacity shortage) in one fill before it stops asking.
PASSING_REFUSALS = 2
# Candidates another fill claimed first, and seconds of filling, before a fill leaves the rest to
# the others: contending for one slots item, claims conflict and wait (job_store).
LOST_TO_OTHERS = 3
FILL_SECONDS = 10.0
# Not starting a job with less time left than this turns a Lambda timeout mid-RunTask into a
# job that waits (or, if RunTask was sent, one the sweep finishes).
TIME_RESERVE_MS = 2 * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) * 1000


def slot_limit(cap: int, slots: Slots, now: float) -> tuple[int | None, bool]:
    """How many slots there are now (None: no limit known, ECS will say), and whether that is
    a probe: the account's limit, remembered too long, plus one, so that one start, not every
    fill at once, finds out whether it still holds."""
    limits = [cap] if cap else []
    probing = False
    if slots.account_limit is not None:
        fresh = slots.limit_seen_at is not None and now - slots.limit_seen_at < (
            ACCOUNT_LIMIT_MEMORY_SECONDS
        )
        probing = not fresh and (not cap or slots.account_limit < cap)
        limits.append(slots.account_limit + (0 if fresh else 1))
    return (min(limits) if limits else None), probing


def free_slots(limit: int | None, slots: Slots) -> int:
    if limit is None:
        return MAX_STARTS_PER_FILL
    return max(0, min(MAX_STARTS_PER_FILL, limit - slots.active))


def candidates(listed: Iterable[Job], own: Iterable[Job], *, ready_by: float) -> list[Job]:
    """Oldest first, each job once: those the index listed and those this invocation just
    recorded (which the index may not list yet)."""
    by_key: dict[tuple[str, str, str], Job] = {}
    for job in (*listed, *own):
        if job.state != "waiting" or job.ready_at is None or job.ready_at > ready_by:
            continue
        if job_record.retry_pending(job, now=ready_by):
            continue
        key = (job.bucket, job.key, job.job_id)
        if key not in by_key or by_key[key].version < job.version:
            by_key[key] = job
    return sorted(by_key.values(), key=lambda job: (job.ready_at or 0.0, job.job_id))


@dataclass
class FillReport:
    """What one fill did: job location -> task ARN started, and why it stopped starting."""

    started: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # location -> ECS's answer
    failed: list[Job] = field(default_factory=list)  # jobs ECS rejected: failed, reported
    stopped_because: str = ""
    listed: list[Job] | None = None  # the oldest waiting, as read (None: not read)


class Scheduler:
    """Starts jobs into free slots, through the job store and one RunTask per attempt."""

    def __init__(
        self,
        store: JobStore,
        settings: RunnerSettings,
        services: Services,
        *,
        remaining_ms: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.services = services
        self.remaining_ms = remaining_ms
        self.reporter = reports.Reporter(store, settings, services)

    def fill(
        self,
        own: Iterable[Job] = (),
        *,
        most: int | None = None,
    ) -> FillReport:
        """Start the oldest ready jobs into the free slots; `own`: jobs just recorded; `most`:
        start no more than this many (an upload starts as many jobs as it brought, its own or
        older ones in their place: a burst of uploads does not make every invocation contend
        for every free slot at once). The report keeps the oldest waiting jobs it read."""
        report = FillReport()
        now = self.services.clock()
        try:
            slots = self.store.slots()
        except StoreError as error:
            report.stopped_because = str(error)
            return report
        limit, probing = slot_limit(self.settings.max_concurrent_tasks, slots, now)
        free = free_slots(limit, slots) if most is None else min(most, free_slots(limit, slots))
        if free == 0:
            report.stopped_because = f"all {limit} slots are taken"
            return report
        listed: list[Job] = []
        try:
            listed = report.listed = self.store.oldest_waiting(
                ready_by=now, wanted=free + CANDIDATE_MARGIN
            )
        except StoreError as error:
            logger.warning(json.dumps({"fill": "waiting jobs unreadable", "error": str(error)}))
        passing = lost_to_others = 0
        for job in candidates(listed, own, ready_by=now):
            why = self._why_stop(report, free, lost_to_others, now)
            if why:
                report.stopped_because = why
                break
            outcome = self.start(job, limit)
            if outcome is None:
                lost_to_others += 1  # another fill took it
                continue
            passing += outcome.answer in ("not-now", "lost")
            stop = self._note(report, job, outcome, limit, passing)
            if stop:
                report.stopped_because = stop
                break
            if probing and outcome.answer == "started" and limit is not None:
                # ECS took one beyond the limit it stated. Our count of slots lags ECS's by
                # the stops not yet reported, so this proves little: a tenth more is tried,
                # and the next refusal states the limit again.
                self.store.raise_account_limit(limit - 1, limit - 1 + max(1, limit // 10), now)
                break
        return report

    def _why_stop(self, report: FillReport, free: int, lost: int, began: float) -> str:
        """Why the fill should stop before its next start ("" to go on)."""
        if len(report.started) >= free:
            return "the free slots are filled"
        if self.remaining_ms is not None and self.remaining_ms() < TIME_RESERVE_MS:
            return f"under {TIME_RESERVE_MS // 1000} s left"
        # Others are filling too, or this fill has taken so long its view is stale: the next
        # event or sweep looks again.
        if lost >= LOST_TO_OTHERS or self.services.clock() - began > FILL_SECONDS:
            return "other invocations are filling the slots"
        return ""

    @staticmethod
    def _note(
        report: FillReport, job: Job, outcome: Started, limit: int | None, passing: int
    ) -> str | None:
        """Add one start's outcome to the report; why the fill stops, or None to go on."""
        if outcome.answer == "started" and outcome.task_arn:
            report.started[job.location] = outcome.task_arn
            return None
        if outcome.answer == "full":
            return f"all {limit} slots are taken"
        if outcome.answer == "rejected":
            report.failed.append(outcome.job)
            return None
        report.refused[job.location] = outcome.reason
        if outcome.answer == "quota" or passing >= PASSING_REFUSALS:
            return outcome.reason  # the account is full, or ECS keeps saying not now
        return None

    def start(self, job: Job, limit: int | None) -> Started | None:
        """Claim a slot for the job and start its attempt; None if another fill claimed it."""
        now = self.services.clock()
        claimed = job_record.claim(job, now=now, default_provider=self.settings.capacity_provider)
        try:
            claimed = self.store.apply(job, claimed, limit=limit)
        except Conflict:
            fresh = self._reread(job)
            if (
                fresh is None
                or fresh.state != "waiting"
                or job_record.retry_pending(fresh, now=now)
            ):
                return None
            claimed = job_record.claim(
                fresh, now=now, default_provider=self.settings.capacity_provider
            )
            try:
                claimed = self.store.apply(fresh, claimed, limit=limit)
            except Conflict:
                return None
            except Full:
                return Started(job, "full")
        except Full:
            return Started(job, "full")
        except StoreError as error:
            return Started(job, "not-now", reason=str(error))
        return self.request(claimed)

    def request(self, job: Job, *, resumed: bool = False) -> Started:
        """RunTask for the job's current attempt (a new claim, or, `resumed`, one whose answer
        was lost), and the record updated with the answer."""
        attempt = job.current
        assert attempt is not None
        assert job.state == "starting"
        answer = run_task(self.services.ecs, build_run_task_request(job, attempt, self.settings))
        if resumed and answer.waits:
            # ECS's "not now" to this call says nothing of the call whose answer was lost: its
            # task may be running. The claim keeps its token until ECS names a task or a
            # definite refusal.
            answer = StartAnswer("lost", reason=f"asked again: {answer.reason}")
        now = self.services.clock()
        try:
            return self._settle(job, answer, now)
        except (Conflict, StoreError) as error:
            # The record keeps its slot and its claim: the sweep asks ECS again with the same
            # token, which finds the task if there is one.
            logger.warning(
                json.dumps(
                    {"job": job.location, "answer": answer.answer, "unrecorded": str(error)},
                    ensure_ascii=False,
                )
            )
            return Started(job, answer.answer, answer.task_arn, answer.reason)

    def _settle(self, job: Job, answer: StartAnswer, now: float) -> Started:
        attempt = job.current
        assert attempt is not None
        if answer.answer == "started" and answer.task_arn:
            after = job_record.task_started(job, attempt.number, answer.task_arn)
            return Started(self.store.apply(job, after), "started", answer.task_arn)
        if answer.waits:
            after = job_record.not_started(job, attempt.number, now=now, reason=answer.reason)
            # At the account's quota, ours still holding slots are its limit, for now.
            seen = now if answer.answer == "quota" else None
            written = self.store.apply(job, after, account_limit_seen_at=seen)
            return Started(written, answer.answer, reason=answer.reason)
        if answer.answer == "rejected":
            after = job_record.failed(
                job, now=now, reason=f"ECS refused to start it: {answer.reason}"
            )
            written = self.reporter.failure(self.store.apply(job, after))
            self.store.count(failed=1)
            return Started(written, "rejected", reason=answer.reason)
        return Started(job, "lost", reason=answer.reason)  # the slot stays held: it may run

    def _reread(self, job: Job) -> Job | None:
        try:
            return self.store.reread(job)
        except StoreError:
            return None


@dataclass(frozen=True)
class Started:
    """One start's outcome: the job as now recorded, and what ECS (or the slots) said."""

    job: Job
    answer: str  # started, full, quota, not-now, lost, rejected
    task_arn: str | None = None
    reason: str = ""
