"""Replay uploads that did not end in a successful job.

Two queues hold them: the runner's dead-letter queue (the runner could not start a task: each
message is Lambda's on-failure record with the original S3 event, or, from the backlog, the S3
event itself with the reason in a message attribute) and the failed-jobs queue (a task started
but stopped without success: each message names the upload in the task's environment). For
every message, the work for the original upload is started again through the real runner code,
with the runner's own configuration, and the message is deleted only after that succeeded (an
upload that must wait for capacity counts: it waits in the backlog). A failed restart leaves
the message where it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_plus, unquote_plus

import boto3

from jobctl.runner import BACKLOG_REASON_ATTRIBUTE, REDRIVE_FIELD, Runner, load_runner

Source = Literal["dead-letter", "failed-jobs"]
Printer = Callable[[str], None]
RECEIVE_BATCH = 10
VISIBILITY_SECONDS = 120  # long enough to restart one message's uploads before others see it


class RedriveError(Exception):
    """What the user must fix before a redrive can run; the message says how."""


class UnreadableMessageError(ValueError):
    """A queue message that is not what the queue should hold."""


@dataclass(frozen=True)
class Replay:
    """One queue message, and the S3 event that restarts its upload(s)."""

    source: Source
    message_id: str
    receipt_handle: str
    event: dict[str, Any]
    keys: tuple[str, ...]
    reason: str
    log_stream: str | None = None


def _environment(entries: Any) -> dict[str, str]:
    if not isinstance(entries, list):
        return {}
    return {
        e["name"]: e["value"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e
    }


def _event_for(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    """An S3 ObjectCreated event for one upload, encoded as S3 encodes keys."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if version_id:
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


def plan(source: Source, message: Mapping[str, Any]) -> Replay:
    """What replaying this message means; ValueError names what is wrong with it."""
    message_id = str(message.get("MessageId", "?"))
    try:
        body = json.loads(message["Body"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise UnreadableMessageError(
            f"message {message_id} in the {source} queue is not JSON"
        ) from error
    if not isinstance(body, dict):
        raise UnreadableMessageError(
            f"message {message_id} in the {source} queue is not a JSON object"
        )

    if source == "dead-letter":
        return _dead_letter(message_id, str(message["ReceiptHandle"]), body, message)

    env = _environment(body.get("environment"))
    bucket, key = env.get("S3_BUCKET"), env.get("S3_KEY")
    if not bucket or not key:
        raise UnreadableMessageError(
            f"message {message_id} in the failed-jobs queue names no S3_BUCKET and S3_KEY in "
            "its environment: it did not come from a task the runner started"
        )
    event = _event_for(bucket, key, env.get("S3_VERSION_ID"))
    # A new task, not the one that failed: the runner's idempotency token would otherwise
    # recognise the upload and start nothing. Keyed on the failed task, so replaying the same
    # message twice still starts only one new task.
    event[REDRIVE_FIELD] = str(body.get("taskArn") or message_id)
    task_id = str(body.get("taskArn", "")).rsplit("/", 1)[-1]
    exit_code = body.get("exitCode") or "none"
    reason = (
        f"{body.get('stopCode', '?')}: {body.get('stoppedReason', '?')} (exit code {exit_code})"
    )
    log_stream = str(body.get("logStream", "")).replace("{task id}", task_id)
    return Replay(
        source, message_id, str(message["ReceiptHandle"]), event, (key,), reason, log_stream
    )


def _dead_letter(
    message_id: str, receipt_handle: str, body: dict[str, Any], message: Mapping[str, Any]
) -> Replay:
    """A dead letter of either shape: Lambda's on-failure record, or the S3 event itself."""
    if "requestPayload" in body:
        event = body.get("requestPayload")
        response = body.get("responsePayload") or {}
        condition = (body.get("requestContext") or {}).get("condition", "failed")
        reason = f"{condition}: {response.get('errorMessage', 'no error message')}"
    else:
        # From the backlog: the runner's own move (the reason in an attribute), or SQS's after
        # the backlog's most receives (no reason).
        event = body
        attribute = (message.get("MessageAttributes") or {}).get(BACKLOG_REASON_ATTRIBUTE) or {}
        reason = str(
            attribute.get("StringValue")
            or "moved from the backlog by SQS after its most receives (the runner kept failing)"
        )
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise UnreadableMessageError(
            f"message {message_id} in the dead-letter queue is neither a Lambda on-failure "
            "record of an S3 event nor an S3 event from the backlog"
        )
    keys = tuple(
        unquote_plus(str(((r.get("s3") or {}).get("object") or {}).get("key", "?")))
        for r in event["Records"]
        if isinstance(r, dict)
    )
    return Replay("dead-letter", message_id, receipt_handle, event, keys, reason)


def receive_all(queue_url: str, limit: int) -> Iterator[dict[str, Any]]:
    """Messages of a queue, at most `limit`; each stays invisible to others while we work."""
    sqs = boto3.client("sqs")
    taken = 0
    while taken < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(RECEIVE_BATCH, limit - taken),
            VisibilityTimeout=VISIBILITY_SECONDS,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return
        taken += len(batch)
        for message in batch:
            yield dict(message)


def stack_outputs(
    stack: str,
    instead: str = "pass --dead-letter-queue-url, --failed-jobs-queue-url and --function",
) -> dict[str, Any]:
    """The deployed stack's outputs, read with the Pulumi CLI; `instead` says what else works."""
    if shutil.which("pulumi") is None:
        raise RedriveError(
            f"reading the stack's outputs needs the Pulumi CLI; install it, or {instead}"
        )
    done = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RedriveError(f"`pulumi stack output --stack {stack}` failed: {done.stderr.strip()}")
    outputs: dict[str, Any] = json.loads(done.stdout)
    return outputs


def runner_environment(function_name: str) -> dict[str, str]:
    """The deployed runner's configuration: the same cluster, task definition and network."""
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=function_name)
    variables: dict[str, str] = (configuration.get("Environment") or {}).get("Variables", {})
    return variables


@dataclass
class Totals:
    restarted: int = 0
    kept: int = 0
    unreadable: int = 0


def redrive(
    queues: Mapping[Source, str],
    runner: Runner | None,
    *,
    dry_run: bool,
    limit: int,
    say: Printer,
) -> Totals:
    """Restart the work of every message; delete a message only once its work started again."""
    sqs = boto3.client("sqs")
    totals = Totals()
    for source, url in queues.items():
        # Messages not acted on are made visible again only once the queue is read: released
        # at once, the same message would be received again and listed up to `limit` times.
        untouched: list[Replay] = []
        for message in receive_all(url, limit):
            try:
                replay = plan(source, message)
            except UnreadableMessageError as error:
                totals.unreadable += 1
                say(f"skip     {error}; left in the queue for a person")
                continue
            keys = ", ".join(replay.keys)
            say(f"{source:<12} {keys}: {replay.reason}")
            if replay.log_stream:
                say(f"             logs: {replay.log_stream}")
            if dry_run or runner is None:
                say("             would restart it (dry run)")
                untouched.append(replay)
                continue
            try:
                summary = runner(replay.event, None)
            except Exception as error:  # the runner raises for every upload it could not start
                totals.kept += 1
                say(f"             not restarted, message kept: {error}")
                untouched.append(replay)
                continue
            started = summary.get("started", {}) if isinstance(summary, dict) else {}
            parked = summary.get("parked", {}) if isinstance(summary, dict) else {}
            say(f"             restarted: {json.dumps(started, ensure_ascii=False)}")
            if parked:
                # Waiting for capacity in the backlog: it starts from there, nothing is lost.
                say(
                    f"             waiting in the backlog: {json.dumps(parked, ensure_ascii=False)}"
                )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=replay.receipt_handle)
            totals.restarted += 1
        for replay in untouched:
            _release(sqs, url, replay)
    return totals


def _release(sqs: Any, url: str, replay: Replay) -> None:
    """Make a message we did not act on visible again at once."""
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=replay.receipt_handle, VisibilityTimeout=0
    )


def resolve(
    *,
    stack: str | None,
    dead_letter_queue_url: str | None,
    failed_jobs_queue_url: str | None,
    function: str | None,
) -> tuple[dict[Source, str], str | None]:
    """The queues to read and the runner function, from flags or the stack's outputs."""
    outputs: dict[str, Any] = {}
    if stack and not (dead_letter_queue_url and failed_jobs_queue_url and function):
        outputs = stack_outputs(stack)
    queues: dict[Source, str] = {}
    dead_letter = dead_letter_queue_url or outputs.get("deadLetterQueueUrl")
    failed_jobs = failed_jobs_queue_url or outputs.get("failedJobsQueueUrl")
    if dead_letter:
        queues["dead-letter"] = dead_letter
    if failed_jobs:
        queues["failed-jobs"] = failed_jobs
    if not queues:
        raise RedriveError(
            "no queue to read: pass --stack, or --dead-letter-queue-url and/or "
            "--failed-jobs-queue-url"
        )
    return queues, function or outputs.get("taskRunnerFunctionName")


def _deployed_runner(function_name: str | None) -> Runner:
    if not function_name:
        raise RedriveError("restarting needs the runner: pass --stack or --function")
    return load_runner(runner_environment(function_name))


def run(
    *,
    stack: str | None,
    dead_letter_queue_url: str | None,
    failed_jobs_queue_url: str | None,
    function: str | None,
    dry_run: bool,
    limit: int,
    say: Printer = print,
) -> int:
    """The redrive command; returns the process exit code."""
    try:
        queues, function_name = resolve(
            stack=stack,
            dead_letter_queue_url=dead_letter_queue_url,
            failed_jobs_queue_url=failed_jobs_queue_url,
            function=function,
        )
        runner = None if dry_run else _deployed_runner(function_name)
    except RedriveError as error:
        say(f"error: {error}")
        return 2
    totals = redrive(queues, runner, dry_run=dry_run, limit=limit, say=say)
    say("")
    say(
        f"{totals.restarted} restarted, {totals.kept} kept after a failed restart, "
        f"{totals.unreadable} unreadable (left in place)"
    )
    return 0 if totals.kept == 0 and totals.unreadable == 0 else 1
