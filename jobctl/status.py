"""Where every upload is: waiting in the backlog, running as a task, failed or dead-lettered.

The figures come from the stack's outputs (the deployed stack's, or the demo's emulator, which
is provisioned from the same program) and the AWS APIs: SQS queue attributes, ECS ListTasks and
DescribeTasks, and the wait metric the runner writes (CloudWatch). Read-only: nothing changes.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from jobctl.runner import METRIC_DIMENSION, METRIC_NAMESPACE, WAIT_METRIC

Printer = Callable[[str], None]
DESCRIBE_TASKS_PAGE = 100  # DescribeTasks's limit
METRIC_WINDOW = datetime.timedelta(hours=1)  # every waiting upload is seen within the hour


class StatusError(Exception):
    """What the user must fix before the status can be read; the message says how."""


@dataclass(frozen=True)
class Status:
    waiting: int  # in the backlog: visible, delayed and in flight together
    # How long the oldest upload the runner deferred had waited, and how long ago it said so;
    # None: it reported no waiting upload in the last hour.
    oldest_wait: tuple[float, float] | None
    pending: int
    running: int
    failed_jobs: int
    dead_letters: int
    cap: int | None

    def lines(self) -> list[str]:
        if not self.waiting:
            oldest = "nothing waits"
        elif self.oldest_wait is None:
            oldest = "the runner reported no wait in the last hour"
        else:
            waited, ago = self.oldest_wait
            oldest = f"the oldest had waited {_duration(waited)} (reported {_duration(ago)} ago)"
        cap = f" (cap {self.cap})" if self.cap else ""
        return [
            f"backlog       {self.waiting} uploads waiting for capacity; {oldest}",
            f"tasks         {self.pending} pending, {self.running} running{cap}",
            f"failed jobs   {self.failed_jobs} waiting for `python -m jobctl redrive`",
            f"dead letters  {self.dead_letters} waiting for `python -m jobctl redrive`",
        ]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


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


def oldest_wait(
    cloudwatch: Any, backlog_url: str, now: datetime.datetime
) -> tuple[float, float] | None:
    """The latest wait the runner reported in the last hour, and how many seconds ago."""
    answer = cloudwatch.get_metric_statistics(
        Namespace=METRIC_NAMESPACE,
        MetricName=WAIT_METRIC,
        Dimensions=[
            {"Name": METRIC_DIMENSION, "Value": backlog_url.rstrip("/").rsplit("/", 1)[-1]}
        ],
        StartTime=now - METRIC_WINDOW,
        EndTime=now,
        Period=60,
        Statistics=["Maximum"],
    )
    points = answer.get("Datapoints", [])
    if not points:
        return None
    latest = max(points, key=lambda point: point["Timestamp"])
    ago = max(0.0, (now - latest["Timestamp"]).total_seconds())
    return float(latest["Maximum"]), ago


def read_status(outputs: Mapping[str, Any], now: datetime.datetime | None = None) -> Status:
    """The figures, read with the credentials and endpoint boto3 finds in the environment."""
    missing = [
        name
        for name in (
            "backlogQueueUrl",
            "deadLetterQueueUrl",
            "failedJobsQueueUrl",
            "clusterArn",
            "taskDefinitionArn",
        )
        if not outputs.get(name)
    ]
    if missing:
        raise StatusError(
            f"the stack's outputs lack {', '.join(missing)}: deploy this version of the program "
            "(`pulumi up`) first"
        )
    sqs = boto3.client("sqs")
    pending, running = task_counts(
        boto3.client("ecs"), outputs["clusterArn"], outputs["taskDefinitionArn"]
    )
    cap = outputs.get("maxConcurrentTasks")
    return Status(
        waiting=queue_depth(sqs, outputs["backlogQueueUrl"]),
        oldest_wait=oldest_wait(
            boto3.client("cloudwatch"),
            outputs["backlogQueueUrl"],
            now or datetime.datetime.now(datetime.UTC),
        ),
        pending=pending,
        running=running,
        failed_jobs=queue_depth(sqs, outputs["failedJobsQueueUrl"]),
        dead_letters=queue_depth(sqs, outputs["deadLetterQueueUrl"]),
        cap=int(cap) if cap else None,
    )


def run(outputs: Mapping[str, Any], *, where: str, say: Printer = print) -> int:
    """The status command; returns the process exit code."""
    try:
        status = read_status(outputs)
    except StatusError as error:
        say(f"error: {error}")
        return 2
    except (ClientError, BotoCoreError) as error:
        say(f"error: reading the status of {where} failed: {error}")
        return 1
    say(f"status of {where}")
    for line in status.lines():
        say(line)
    return 0
