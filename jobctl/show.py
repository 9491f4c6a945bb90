"""`jobctl show`: what happened to one upload, from its job record — uploaded, waited, each
attempt (task, capacity provider, start, stop, exit, reason), the result object — with the
exact command that reads each attempt's logs."""

from __future__ import annotations

import argparse
import datetime
import shlex
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from job_record import Attempt, Job
from job_store import StoreError
from reports import log_stream

from jobctl import stack as stacks
from jobctl.stack import StackError

Printer = Callable[[str], None]
INDENT = "             "


def when(epoch: float | None, day: str | None = None) -> str:
    """A time in UTC; only its clock time when it falls on `day` (YYYY-MM-DD), named above."""
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    if day is not None and moment.strftime("%Y-%m-%d") == day:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def day_of(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d")


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def logs_command(log_group: str, stream: str, endpoint_url: str | None = None) -> str:
    """The AWS CLI command that prints one attempt's log lines."""
    endpoint = ["--endpoint-url", endpoint_url] if endpoint_url else []
    return shlex.join(
        [
            "aws", "logs", "get-log-events", *endpoint, "--log-group-name", log_group,
            "--log-stream-name", stream, "--query", "events[].message", "--output", "text",
        ]
    )  # fmt: skip


def attempt_lines(
    attempt: Attempt,
    *,
    log_group: str | None,
    container: str,
    endpoint_url: str | None = None,
    day: str | None = None,
) -> list[str]:
    task = attempt.task_id or "(no task yet: RunTask's answer has not come)"
    ran = (
        f" (ran {duration(attempt.stopped_at - attempt.started_at)})"
        if attempt.started_at and attempt.stopped_at
        else ""
    )
    lines = [
        f"  attempt {attempt.number}  {attempt.provider}  task {task}",
        f"{INDENT}claimed {when(attempt.claimed_at, day)}, started "
        f"{when(attempt.started_at, day)}, stopped {when(attempt.stopped_at, day)}{ran}",
    ]
    if attempt.stopped_at is not None:
        said = [attempt.cause or "?", attempt.stop_code or "no stop code"]
        if attempt.exit_code is not None:
            said.append(f"exit {attempt.exit_code}")
        if attempt.stopped_reason:
            said.append(attempt.stopped_reason)
        if attempt.container_reason:
            said.append(attempt.container_reason)
        lines.append(INDENT + "; ".join(said))
    elif attempt.stop_requested:
        lines.append(f"{INDENT}stop asked ({attempt.stop_requested}); not stopped yet")
    stream = log_stream(attempt, container)
    if stream is not None:
        where = (
            logs_command(log_group, stream, endpoint_url) if log_group else f"log stream {stream}"
        )
        lines.append(f"{INDENT}logs: {where}")
    return lines


def _state(job: Job) -> str:
    if job.state in ("succeeded", "failed") and job.attempt_count:
        plural = "s" if job.attempt_count > 1 else ""
        return f"{job.state} after {job.attempt_count} attempt{plural}"
    return job.state


def timeline(
    job: Job,
    *,
    log_group: str | None,
    result_prefix: str | None = None,
    container: str = "job",
    endpoint_url: str | None = None,
    stack: str | None = None,
) -> list[str]:
    """The job's story, one line a step: uploaded, waited, each attempt, how it ended.

    `endpoint_url` (the demo's emulator) goes into the log commands; `stack` into the redrive's.
    """
    version = f" (version {job.version_id})" if job.version_id else ""
    lines = [f"{job.location}{version}", f"  job        {job.job_id}: {_state(job)}"]
    if job.uploaded_at:
        lines.append(f"  uploaded   {job.uploaded_at}")
    lines.append(f"  recorded   {when(job.recorded_at)}")
    first = job.attempts[0] if job.attempts else None
    if first is not None and first.number == 1:
        lines.append(f"  waited     {duration(first.claimed_at - job.recorded_at)} for a slot")
    elif job.state == "waiting" and job.ready_at is not None:
        lines.append(f"  waiting    for a slot since {when(job.ready_at)}")
    if job.attempt_count > len(job.attempts):
        lines.append(f"  ({job.attempt_count - len(job.attempts)} earlier attempts not kept)")
    previous: Attempt | None = None
    for attempt in job.attempts:
        if previous is not None and previous.stopped_at is not None:
            # The retry's delay, then its turn among those waiting (in its first place).
            waited = duration(attempt.claimed_at - previous.stopped_at)
            lines.append(f"  waited     {waited} before attempt {attempt.number}")
        previous = attempt
        lines += attempt_lines(
            attempt,
            log_group=log_group,
            container=container,
            endpoint_url=endpoint_url,
            day=day_of(job.recorded_at),
        )
    if job.redrives:
        lines.append(f"  redriven   {job.redrives} time(s), the last from {job.last_redrive_of}")
    if job.state == "waiting" and job.attempts:
        reason = f" ({job.reason})" if job.reason else ""
        # In its delay: it may start from then, in its place; after, it waits for a slot.
        start = f"from {when(job.retry_at)}" if job.retry_at is not None else "when a slot is free"
        lines.append(f"  next       attempt {job.attempt_count + 1} {start}{reason}")
    if job.state == "failed":
        lines.append(f"  failed     {job.reason or 'no reason recorded'}")
        where = f"--stack {stack}" if stack else "--stack <stack>"
        lines.append(f"  replay     python -m jobctl redrive {where}")
    if job.state == "succeeded" and result_prefix:
        lines.append(f"  result     s3://{job.bucket}/{result_prefix}{job.key}.json")
    return lines


def parse_target(target: str, bucket: str | None) -> tuple[str, str]:
    """(bucket, key) from s3://bucket/key, or a key with the stack's bucket."""
    if target.startswith("s3://"):
        found_bucket, _, key = target[5:].partition("/")
        if not found_bucket or not key:
            raise ValueError(f"{target!r} names no key: write s3://<bucket>/<key>")
        return found_bucket, key
    if bucket is None:
        raise ValueError(
            f"{target!r} is a key: name the stack (--stack), or write s3://<bucket>/<key>"
        )
    return bucket, target


def result_note(s3: Any, bucket: str, key: str) -> str:
    """Whether the result object is there, as S3 says."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", error))
        return f"(not found: {code})"
    except BotoCoreError as error:
        return f"(not checked: {error})"
    written = head.get("LastModified")
    at = f", written {when(written.timestamp())}" if written is not None else ""
    return f"({head.get('ContentLength', 0)} bytes{at})"


def show(
    store: Any,
    outputs: Mapping[str, Any],
    target: str,
    say: Printer,
    *,
    endpoint_url: str | None = None,
    stack: str | None = None,
    s3: Any = None,
) -> int:
    """Print every job of the upload's key (oldest first); 1 if there is none."""
    bucket, key = parse_target(target, outputs.get("bucketName"))
    jobs = store.jobs_of(bucket, key)
    if not jobs:
        elsewhere = (
            f" (the stack's bucket is {outputs['bucketName']})"
            if outputs.get("bucketName") not in (None, bucket)
            else ""
        )
        say(
            f"no job for s3://{bucket}/{key}{elsewhere}: not uploaded under the upload prefix "
            "(or as a result), or its record has expired (jobRecordDays)"
        )
        return 1
    result_prefix = outputs.get("resultPrefix")
    for number, job in enumerate(jobs):
        if number:
            say("")
        lines = timeline(
            job,
            log_group=outputs.get("logGroupName"),
            result_prefix=result_prefix,
            endpoint_url=endpoint_url,
            stack=stack,
        )
        if job.state == "succeeded" and result_prefix:
            client = s3 if s3 is not None else boto3.client("s3")
            lines[-1] += " " + result_note(client, job.bucket, f"{result_prefix}{job.key}.json")
        for line in lines:
            say(line)
    return 0


def register(commands: Any) -> None:
    look = commands.add_parser(
        "show",
        help="what happened to one upload: its job's timeline and the commands to read its logs",
        description=(
            "Print the timeline of every job of one upload's key from the job table: uploaded, "
            "waited, each attempt (task, capacity provider, start, stop, exit code, reason), "
            "the result object, with the AWS CLI command that reads each attempt's logs. Name "
            "the upload as s3://bucket/key, or as a key of the stack's bucket. Changes nothing."
        ),
    )
    look.add_argument("target", metavar="s3://BUCKET/KEY | KEY", help="the upload")
    stacks.add_arguments(look)
    look.set_defaults(command=command)


def command(args: argparse.Namespace, say: Printer) -> int:
    try:
        found = stacks.read_stack(args.stack, args.endpoint_url)
        store = stacks.job_store(found.outputs)
        return show(
            store,
            found.outputs,
            args.target,
            say,
            endpoint_url=found.endpoint_url,
            stack=args.stack,
        )
    except (StackError, ValueError) as error:
        say(f"error: {error}")
        return 2
    except (StoreError, ClientError, BotoCoreError) as error:
        say(f"error: reading the job of {args.target} failed: {error}")
        return 1
