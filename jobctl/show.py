"""`jobctl show`: what happened to one upload, from its job record — the timeline of its
attempts, and the command that reads each attempt's logs."""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from job_record import Attempt, Job
from reports import log_stream

Printer = Callable[[str], None]


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def logs_command(log_group: str, stream: str) -> str:
    return shlex.join(
        [
            "aws", "logs", "get-log-events", "--log-group-name", log_group,
            "--log-stream-name", stream, "--query", "events[].message", "--output", "text",
        ]
    )  # fmt: skip


def attempt_lines(attempt: Attempt, *, log_group: str | None, container: str) -> list[str]:
    task = attempt.task_id or "(no task: RunTask's answer has not come)"
    lines = [
        f"  attempt {attempt.number}  {attempt.provider}  task {task}",
        f"             claimed {when(attempt.claimed_at)}, started {when(attempt.started_at)}, "
        f"stopped {when(attempt.stopped_at)}"
        + (
            f" (ran {duration(attempt.stopped_at - attempt.started_at)})"
            if attempt.started_at and attempt.stopped_at
            else ""
        ),
    ]
    if attempt.stopped_at is not None:
        said = [attempt.cause or "?", attempt.stop_code or "no stop code"]
        if attempt.exit_code is not None:
            said.append(f"exit {attempt.exit_code}")
        if attempt.stopped_reason:
            said.append(attempt.stopped_reason)
        if attempt.container_reason:
            said.append(attempt.container_reason)
        lines.append("             " + "; ".join(said))
    elif attempt.stop_requested:
        lines.append(f"             stop asked ({attempt.stop_requested}); not stopped yet")
    stream = log_stream(attempt, container)
    if stream is not None:
        where = logs_command(log_group, stream) if log_group else f"log stream {stream}"
        lines.append(f"             logs: {where}")
    return lines


def timeline(
    job: Job,
    *,
    log_group: str | None,
    result_prefix: str | None = None,
    container: str = "job",
) -> list[str]:
    """The job's story, one line a step: uploaded, waited, each attempt, how it ended."""
    version = f" (version {job.version_id})" if job.version_id else ""
    lines = [f"{job.location}{version}", f"  job        {job.job_id}: {job.state}"]
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
    for attempt in job.attempts:
        lines += attempt_lines(attempt, log_group=log_group, container=container)
    if job.redrives:
        lines.append(f"  redriven   {job.redrives} time(s)")
    if job.state == "waiting" and job.attempts and job.ready_at is not None:
        lines.append(f"  next       attempt {job.attempt_count + 1} from {when(job.ready_at)}")
    if job.state == "failed":
        lines.append(f"  failed     {job.reason or 'no reason recorded'}")
        lines.append("  replay     python -m jobctl redrive --stack <stack>")
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


def show(store: Any, outputs: Mapping[str, Any], target: str, say: Printer) -> int:
    """Print every job of the upload's key (newest last); 1 if there is none."""
    bucket, key = parse_target(target, outputs.get("bucketName"))
    jobs = store.jobs_of(bucket, key)
    if not jobs:
        say(
            f"no job for s3://{bucket}/{key}: not uploaded under the upload prefix, or its "
            "record has expired (jobRecordDays)"
        )
        return 1
    for number, job in enumerate(jobs):
        if number:
            say("")
        for line in timeline(
            job, log_group=outputs.get("logGroupName"), result_prefix=outputs.get("resultPrefix")
        ):
            say(line)
    return 0
