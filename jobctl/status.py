"""`jobctl status`: where every upload is: waiting for a task slot, running, failed or
dead-lettered, and how far the current batch has come.

The figures come from the stack's outputs (the deployed stack's, or the demo's emulator, which
is provisioned from the same program) and the AWS APIs: the job table (the waiting jobs, the
oldest wait, the runner's totals and where the batch began), ECS ListTasks and DescribeTasks,
and SQS queue attributes. Read-only: nothing changes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from job_store import Stats, StoreError

from jobctl import stack as stacks
from jobctl.stack import StackError

Printer = Callable[[str], None]
DESCRIBE_TASKS_PAGE = 100  # DescribeTasks's limit
BAR_WIDTH = 40
WATCH_SECONDS = 5.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, then erase the screen: a terminal redraws in place


@dataclass(frozen=True)
class Progress:
    """The current batch: jobs recorded since it began, and how many of them ended.

    A batch begins when a job is recorded while none is in progress; the runner notes the
    totals at that moment (job_store.Stats.batch_*), so these are differences from them.
    """

    total: int
    succeeded: int
    failed: int
    since: float

    @classmethod
    def of(cls, stats: Stats) -> Progress | None:
        if stats.batch_since is None:
            return None
        total = max(0, stats.recorded - stats.batch_recorded)
        # The totals are best effort (a count can be lost): never more done than recorded.
        succeeded = min(total, max(0, stats.succeeded - stats.batch_succeeded))
        failed = min(total - succeeded, max(0, stats.failed - stats.batch_failed))
        return cls(total, succeeded, failed, stats.batch_since)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def per_minute(self, now: float) -> float:
        elapsed = now - self.since
        return self.done / elapsed * 60 if elapsed > 0 else 0.0

    def seconds_left(self, now: float) -> float | None:
        rate = self.per_minute(now) / 60
        return (self.total - self.done) / rate if rate > 0 else None


@dataclass(frozen=True)
class Status:
    waiting: int  # jobs waiting for a task slot (or a retry's delay), from the runner's totals
    oldest_wait: float | None  # seconds the oldest job ready to start has waited
    parked: int  # uploads in the backlog queue: the job table could not take them
    pending: int
    running: int
    cap: int | None
    account_limit: int | None  # the account's task limit, as ECS last stated it
    batch: Progress | None
    failed_jobs: int
    dead_letters: int
    now: float
    dashboard: str | None = None  # the stack's CloudWatch dashboard (a deployed stack's)

    def lines(self, *, bar: bool = False) -> list[str]:
        """What the command prints; `bar` adds a progress bar (for a terminal)."""
        if not self.waiting:
            backlog = "nothing waits"
        else:
            oldest = (
                f"; the oldest has waited {duration(self.oldest_wait)}"
                if self.oldest_wait is not None
                else "; none is ready to start yet (retries wait out their delay)"
            )
            backlog = f"{self.waiting} jobs waiting for a task slot{oldest}"
        lines = [f"backlog       {backlog}"]
        if self.parked:
            lines.append(
                f"              {self.parked} uploads parked in the backlog queue (the job table "
                "could not take them; the runner records them as it can)"
            )
        limits = [f"cap {self.cap}"] if self.cap else []
        if self.account_limit is not None:
            limits.append(f"the account's limit {self.account_limit}, as ECS last said")
        limit = f" ({'; '.join(limits)})" if limits else ""
        lines.append(f"tasks         {self.pending} pending, {self.running} running{limit}")
        lines += self._batch_lines(bar)
        lines += [
            f"failed jobs   {self.failed_jobs} waiting for `python -m jobctl redrive`",
            f"dead letters  {self.dead_letters} waiting for `python -m jobctl redrive`",
        ]
        if self.dashboard:
            lines.append(f"dashboard     {self.dashboard}")
        return lines

    def _batch_lines(self, bar: bool) -> list[str]:
        batch = self.batch
        if batch is None:
            return ["batch         no upload recorded yet"]
        counts = (
            f"{batch.done} of {batch.total} done "
            f"({batch.succeeded} succeeded, {batch.failed} failed)"
        )
        if batch.finished:
            lines = [f"batch         {counts}; began {duration(self.now - batch.since)} ago"]
        else:
            left = batch.seconds_left(self.now)
            pace = (
                f"{batch.per_minute(self.now):.1f} per minute, about {duration(left)} left"
                if left is not None
                else "none done yet, so no estimate of the time left"
            )
            lines = [f"batch         {counts}, {pace}"]
        if bar:
            lines.append("              " + progress_bar(batch.done, batch.total))
        return lines


def duration(seconds: float) -> str:
    minutes, whole = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {whole} s" if minutes else f"{whole} s"


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    fraction = done / total if total else 1.0
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f} %"


def queue_depth(sqs: Any, url: str) -> int:
    """Messages in a queue: visible, delayed and in flight (invisible while they wait)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesDelayed",
        "ApproximateNumberOfMessagesNotVisible",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def task_counts(ecs: Any, cluster_arn: str, task_definition_arn: str) -> tuple[int, int]:
    """(pending, running) tasks of the job's family on its cluster."""
    family = task_definition_arn.rsplit("/", 1)[-1].split(":", 1)[0]
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(
        cluster=cluster_arn, family=family, desiredStatus="RUNNING"
    ):
        arns += page.get("taskArns", [])
    pending = running = 0
    for start in range(0, len(arns), DESCRIBE_TASKS_PAGE):
        answer = ecs.describe_tasks(
            cluster=cluster_arn, tasks=arns[start : start + DESCRIBE_TASKS_PAGE]
        )
        for task in answer.get("tasks", []):
            if task.get("lastStatus") == "RUNNING":
                running += 1
            else:
                pending += 1  # PROVISIONING, PENDING, ACTIVATING: not running yet
    return pending, running


REQUIRED_OUTPUTS = (
    "backlogQueueUrl",
    "deadLetterQueueUrl",
    "failedJobsQueueUrl",
    "clusterArn",
    "taskDefinitionArn",
    "jobTableName",
)


def read_status(
    outputs: Mapping[str, Any], now: float | None = None, *, dashboard: bool = False
) -> Status:
    """The figures, read with the credentials and endpoint boto3 finds in the environment;
    `dashboard`: name the stack's dashboard (the emulator has none)."""
    stacks.require(outputs, *REQUIRED_OUTPUTS)
    now = time.time() if now is None else now
    store = stacks.job_store(outputs)
    stats, slots = store.stats(), store.slots()
    oldest = store.oldest_waiting(ready_by=now, wanted=1)
    sqs = boto3.client("sqs")
    pending, running = task_counts(
        boto3.client("ecs"), outputs["clusterArn"], outputs["taskDefinitionArn"]
    )
    cap = outputs.get("maxConcurrentTasks")
    return Status(
        waiting=max(0, stats.in_progress - slots.active),
        oldest_wait=(
            now - since if oldest and (since := oldest[0].waiting_since) is not None else None
        ),
        parked=queue_depth(sqs, outputs["backlogQueueUrl"]),
        pending=pending,
        running=running,
        cap=int(cap) if cap else None,
        account_limit=slots.account_limit,
        batch=Progress.of(stats),
        failed_jobs=queue_depth(sqs, outputs["failedJobsQueueUrl"]),
        dead_letters=queue_depth(sqs, outputs["deadLetterQueueUrl"]),
        now=now,
        dashboard=str(outputs["dashboardUrl"])
        if dashboard and outputs.get("dashboardUrl")
        else None,
    )


def watch(
    read: Callable[[], Status],
    say: Printer,
    *,
    where: str,
    every: float = WATCH_SECONDS,
    times: int | None = None,
    terminal: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the status every `every` seconds, `times` times (None: until Ctrl-C). On a
    terminal each refresh redraws the screen, with a progress bar; elsewhere (a log, a pipe)
    the refreshes follow one another."""
    rounds = itertools.count() if times is None else range(times)
    try:
        for number in rounds:
            if number:
                sleep(every)
            status = read()
            stamp = time.strftime("%H:%M:%S", time.localtime(status.now))
            heading = f"status of {where} at {stamp} (every {every:g} s; Ctrl-C to stop)"
            if terminal:
                say(CLEAR_SCREEN + heading)
            else:
                if number:
                    say("")
                say(heading)
            for line in status.lines(bar=terminal):
                say(line)
    except KeyboardInterrupt:
        say("stopped")
    return 0


def register(commands: Any) -> None:
    look = commands.add_parser(
        "status",
        help="jobs waiting and running, the batch's progress, failures waiting for a redrive",
        description=(
            "Show where the uploads are: jobs waiting for a task slot (and how long the oldest "
            "has waited), tasks pending and running, the current batch's progress (done of "
            "total, rate, time left), failed jobs and dead letters waiting for a redrive. Reads "
            "the stack's outputs with the Pulumi CLI, or, with --endpoint-url, the program "
            "evaluated offline for the demo's emulator. Changes nothing."
        ),
    )
    stacks.add_arguments(look)
    look.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=WATCH_SECONDS,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {WATCH_SECONDS:g}) until Ctrl-C",
    )
    look.add_argument("--times", type=int, metavar="N", help="with --watch: stop after N refreshes")
    look.set_defaults(command=command)


def command(args: argparse.Namespace, say: Printer) -> int:
    if args.watch is not None and args.watch <= 0:
        say(f"error: --watch {args.watch:g}: give a number of seconds above 0")
        return 2
    if args.times is not None and args.times < 1:
        say(f"error: --times {args.times}: give 1 or more refreshes")
        return 2
    try:
        found = stacks.read_stack(args.stack, args.endpoint_url)
        stacks.require(found.outputs, *REQUIRED_OUTPUTS)
    except StackError as error:
        say(f"error: {error}")
        return 2
    terminal = sys.stdout.isatty()
    deployed = found.endpoint_url is None

    def read() -> Status:
        return read_status(found.outputs, dashboard=deployed)

    try:
        if args.watch is None:
            status = read()
            say(f"status of {found.where}")
            for line in status.lines(bar=terminal):
                say(line)
            return 0
        return watch(
            read,
            say,
            where=found.where,
            every=args.watch,
            times=args.times,
            terminal=terminal,
        )
    except (ClientError, BotoCoreError, StoreError) as error:
        say(f"error: reading the status of {found.where} failed: {error}")
        return 1
