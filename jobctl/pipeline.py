"""Each upload's path through the demo's pipeline, and the parts of AWS the demo plays besides
Fargate: S3 invoking the runner, the backlog's event source mapping, EventBridge's schedule
(the sweep) and CloudWatch turning the runner's metric lines into metrics.

Shared by the demo's modes (demo.py: one file after another, watch, stdin; burst.py: many at
once); the task processes are fargate.py's.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError
from job_record import FINAL_STATES, Job
from job_store import JobStore

from jobctl.provision import Pipeline
from jobctl.runner import LoadedRunner, Runner

Printer = Callable[[str], None]
EVENT_WAIT_SECONDS = 15.0  # the emulator delivers within milliseconds; this bounds a stuck run
POLL_SECONDS = 0.2
# The deployed sweep runs once a minute; the demo's every second, so that a retry's delay or a
# freed slot the events did not fill is seen while a person watches.
SWEEP_SECONDS = 1.0


class DemoError(Exception):
    """A step of the pipeline failed; the message says which and why."""


@dataclass
class TaskRun:
    """One task the demo ran for an upload: an attempt of its job."""

    task_arn: str
    attempt: int
    exit_code: int | None = None
    seconds: float | None = None
    log: list[str] = field(default_factory=list)
    stop_code: str | None = None
    interrupted: bool = False  # stopped here as Spot reclaims a task


@dataclass
class Outcome:
    """One upload's path through the pipeline."""

    key: str
    size: int
    uploaded_at: float
    event_after: float | None = None
    runs: list[TaskRun] = field(default_factory=list)
    result_key: str | None = None
    result: dict[str, Any] | None = None
    failure: str | None = None
    parked: bool = False  # the job table could not take it: it waits in the backlog queue
    seen: bool = False  # the runner said something of it
    job: Job | None = None  # its record, as last read

    @property
    def task_arn(self) -> str | None:
        return self.runs[-1].task_arn if self.runs else None

    @property
    def exit_code(self) -> int | None:
        return self.runs[-1].exit_code if self.runs else None

    @property
    def task_seconds(self) -> float | None:
        return self.runs[-1].seconds if self.runs else None

    @property
    def log(self) -> list[str]:
        return self.runs[-1].log if self.runs else []

    @property
    def settled(self) -> bool:
        """Its job ended (succeeded or failed), or the runner will do nothing more for it."""
        return self.failure is not None or (self.job is not None and self.job.state in FINAL_STATES)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.exit_code == 0 and self.result is not None


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def indent(text: str, by: str = "           ") -> str:
    return "\n".join(by + line for line in text.splitlines())


# --- uploads and results ----------------------------------------------------------------------


def upload(pipeline: Pipeline, path: Path) -> Outcome:
    key = pipeline.upload_prefix + path.name
    size = path.stat().st_size
    boto3.client("s3").upload_file(str(path), pipeline.bucket, key)
    return Outcome(key=key, size=size, uploaded_at=time.monotonic())


def fetch_result(pipeline: Pipeline, outcome: Outcome) -> None:
    s3 = boto3.client("s3")
    outcome.result_key = f"{pipeline.result_prefix}{outcome.key}.json"
    try:
        body = s3.get_object(Bucket=pipeline.bucket, Key=outcome.result_key)["Body"].read()
    except ClientError as error:
        if outcome.failure is None:
            outcome.failure = (
                f"result: s3://{pipeline.bucket}/{outcome.result_key} is missing "
                f"({error.response['Error']['Code']})"
            )
        return
    outcome.result = json.loads(body)


def settle(pipeline: Pipeline, outcome: Outcome) -> None:
    """Once its job ended: its result, or a failure naming what failed (the task's exit code
    and last line, or the job's reason)."""
    job = outcome.job
    if outcome.failure is None and job is not None and job.state == "failed":
        last_run = outcome.runs[-1] if outcome.runs else None
        if last_run is not None and last_run.exit_code not in (None, 0, 143):
            last = last_run.log[-1] if last_run.log else "(no output)"
            outcome.failure = f"task: exited with code {last_run.exit_code}: {last}"
        else:
            outcome.failure = f"job failed: {job.reason or 'no reason recorded'}"
    fetch_result(pipeline, outcome)


def latest_job(store: JobStore, pipeline: Pipeline, key: str) -> Job | None:
    """The newest job of the key (the upload the demo made last)."""
    jobs = store.jobs_of(pipeline.bucket, key)
    return jobs[-1] if jobs else None


def sample_files(directory: Path) -> list[Path]:
    """A small generated sample: text with many lines, a name with spaces and unicode, binary."""
    csv = directory / "quarterly report 2026.csv"
    csv.write_text(
        "region,month,revenue\n"
        + "".join(f"r{i % 7},{1 + i % 12},{i * 37 % 1000}\n" for i in range(5000)),
        encoding="utf-8",
    )
    notes = directory / "notes - café ünïcode 🚀.txt"
    notes.write_text("Files with spaces and unicode in their names work too.\n" * 20, "utf-8")
    blob = directory / "sensor-dump.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024))
    return [csv, notes, blob]


# --- S3 invoking the runner --------------------------------------------------------------------


def receive_events(queue_url: str, wanted: int, deadline: float) -> Iterator[dict[str, Any]]:
    """S3 events from the notification queue, until `wanted` upload events arrived or time is up."""
    sqs = boto3.client("sqs")
    received = 0
    while received < wanted and time.monotonic() < deadline:
        wait = max(0, min(1, int(deadline - time.monotonic())))
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        ).get("Messages", [])
        if not messages and not wait:
            time.sleep(0.05)  # the deadline's last second: poll, but do not spin on the emulator
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            event = json.loads(message["Body"])
            if event.get("Event") == "s3:TestEvent":
                continue  # sent once when the notification is configured
            received += len(event.get("Records", []))
            yield event


def dispatch_events(
    pipeline: Pipeline, runner: Runner, outcomes: Mapping[str, Outcome], say: Printer
) -> None:
    """Hand each S3 event to the runner as Lambda would; what it says goes onto the outcomes."""
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    for event in receive_events(pipeline.queue_url, len(outcomes), deadline):
        for record in event.get("Records", []):
            key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "?")))
            latency = ""
            if key in outcomes:
                outcomes[key].event_after = time.monotonic() - outcomes[key].uploaded_at
                latency = f" {outcomes[key].event_after:.2f} s after the upload"
            say(f"event    {record.get('eventName', '?')}{latency} → runner (handler.handler)")
        try:
            summary = runner(event, None)
        except Exception as error:  # Lambda would retry it, then dead-letter it
            say(f"runner   raised: {error}")
            for key, outcome in outcomes.items():
                if not outcome.seen and key in str(error):
                    outcome.seen = True
                    outcome.failure = f"runner: {error}"
            continue
        _apply_summary(summary, outcomes, say)
    for outcome in outcomes.values():
        if not outcome.seen:
            outcome.failure = (
                f"event: the runner heard nothing of it within {EVENT_WAIT_SECONDS:.0f} s"
            )


def _apply_summary(
    summary: Mapping[str, Any], outcomes: Mapping[str, Outcome], say: Printer
) -> None:
    """What the runner said of each upload (started, waiting, skipped, parked)."""
    for key in summary.get("started", {}):
        say(f"runner   started its task for {key}")
        if key in outcomes:
            outcomes[key].seen = True
    for key, reason in summary.get("waiting", {}).items():
        say(f"runner   recorded {key}: it {reason}")
        if key in outcomes:
            outcomes[key].seen = True
    for key, reason in summary.get("skipped", {}).items():
        say(f"runner   skipped {key}: {reason}")
        outcome = outcomes.get(key)
        # A second event for an upload the runner already took (S3, and moto, may send two for
        # one multipart upload) changes nothing; a first one skipped means no job will come.
        if outcome is not None and not outcome.seen:
            outcome.seen = True
            outcome.failure = f"runner skipped it: {reason}"
    for key, reason in summary.get("parked", {}).items():
        say(f"runner   parked {key}: {reason}")
        if key in outcomes:
            outcomes[key].seen = True
            outcomes[key].parked = True


def results_triggered_nothing(pipeline: Pipeline) -> int:
    """Events seen for keys under the result prefix (there must be none).

    The emulator queues an object's event before its PUT returns, and every result is written
    by now: what is queued is there at the first receive, and a tenth of a second of listening
    is a margin, not a guess at a delivery delay.
    """
    triggered = 0
    for event in receive_events(pipeline.queue_url, 1, time.monotonic() + 0.1):
        for record in event.get("Records", []):
            key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
            if key.startswith(pipeline.result_prefix):
                triggered += 1
    return triggered


# --- the backlog's event source mapping, the schedule, CloudWatch -------------------------------


def poll_backlog(pipeline: Pipeline, runner: Runner, say: Printer) -> int:
    """One batch from the backlog to the runner, as the event source mapping hands it over;
    the messages the runner does not name in batchItemFailures are deleted. Returns the batch's
    size."""
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=pipeline.backlog_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    if not messages:
        return 0
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "eventSource": "aws:sqs",
                "eventSourceARN": pipeline.backlog_arn,
            }
            for m in messages
        ]
    }
    try:
        answer = runner(event, None)
    except Exception as error:  # the whole batch comes back after the visibility timeout
        say(f"runner   raised on a backlog batch: {error}")
        return len(messages)
    keep = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
    for message in messages:
        if message["MessageId"] not in keep:
            sqs.delete_message(
                QueueUrl=pipeline.backlog_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return len(messages)


class Sweeper:
    """EventBridge's schedule for the sweep, compressed to every SWEEP_SECONDS."""

    def __init__(
        self,
        runner: LoadedRunner,
        say: Printer,
        every: float = SWEEP_SECONDS,
        rule_arn: str | None = None,
    ) -> None:
        self.runner = runner
        self.say = say
        self.rule_arn = rule_arn
        self.every = every
        self.last = time.monotonic()
        self.sweeps = 0

    def due(self) -> dict[str, int] | None:
        """Sweep if its time has come; what the sweep did, or None."""
        if time.monotonic() - self.last < self.every:
            return None
        return self.now()

    def now(self) -> dict[str, int] | None:
        self.last = time.monotonic()
        self.sweeps += 1
        try:
            done: dict[str, int] = self.runner.sweep(self.rule_arn)
        except Exception as error:  # the schedule invokes it again a minute later
            self.say(f"sweep    raised: {error}")
            return None
        return done


def publish_metric(line: str) -> None:
    """What CloudWatch Logs does with an embedded-metric line the runner writes: a metric."""
    record = json.loads(line)
    directives = record["_aws"]
    timestamp = datetime.datetime.fromtimestamp(directives["Timestamp"] / 1000, datetime.UTC)
    for directive in directives["CloudWatchMetrics"]:
        (dimensions,) = directive["Dimensions"]
        boto3.client("cloudwatch").put_metric_data(
            Namespace=directive["Namespace"],
            MetricData=[
                {
                    "MetricName": metric["Name"],
                    "Unit": metric["Unit"],
                    "Value": float(record[metric["Name"]]),
                    "Timestamp": timestamp,
                    "Dimensions": [
                        {"Name": name, "Value": str(record[name])} for name in dimensions
                    ],
                }
                for metric in directive["Metrics"]
            ],
        )
