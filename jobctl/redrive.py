"""`jobctl redrive`: replay what did not end in a successful job.

Two queues hold it. The failed-jobs queue: a job whose task ran and failed for good, reported
by the runner once with its attempts and `redriveOf` (older messages, EventBridge's, name the
upload in the task's environment and carry no `redriveOf`: the task ARN stands in). The
runner's dead-letter queue: a job that never ran (ECS refused it, or it waited past the limit),
reported by the runner as the S3 event that replays it with `redriveOf` and a `reason`
attribute; an upload the backlog gave up on; or Lambda's on-failure record of an invocation
that failed three times, whose requestPayload is an S3 event, an ECS task state change or the
sweep's scheduled event.

Each message is replayed with the deployed runner's own code and configuration (load_runner):
- a message naming a job still in the job table: the runner's redrive of that record (it waits
  again with a fresh retry budget, once per `redriveOf`, so replaying the same message twice
  redrives once), then one sweep through the runner starts what the free slots allow;
- anything else: its event through the runner's handler, as Lambda would invoke it.
A message is deleted only once its work is safe again (its job waits in the table, or the
runner handled the event); a failed replay leaves it where it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote_plus, unquote_plus

import boto3
from job_record import Job
from job_store import JobStore, StoreError
from reports import job_id_named
from sweep import is_sweep_event
from task_events import is_task_event
from uploads import Recorder

from jobctl.runner import BACKLOG_REASON_ATTRIBUTE, REDRIVE_FIELD, load_runner
from jobctl.stack import StackError, deployed_outputs

Source = Literal["dead-letter", "failed-jobs"]
Kind = Literal["upload", "task-stop", "sweep"]
Printer = Callable[[str], None]
RECEIVE_BATCH = 10
VISIBILITY_SECONDS = 120  # long enough to restart one message's work before others see it


class RedriveError(Exception):
    """What the user must fix before a redrive can run; the message says how."""


class UnreadableMessageError(ValueError):
    """A queue message that is not what the queue should hold."""


class RunnerHandle(Protocol):
    """What the redrive needs of the runner: its handler, its job table, its sweep."""

    def __call__(self, event: Any, context: Any = None) -> Any: ...

    @property
    def store(self) -> JobStore: ...

    @property
    def services(self) -> Any: ...

    def sweep(self) -> Any: ...


@dataclass(frozen=True)
class JobRef:
    bucket: str
    key: str
    job_id: str


@dataclass(frozen=True)
class Replay:
    """One queue message: what it names, and how to replay it."""

    source: Source
    message_id: str
    receipt_handle: str
    kind: Kind
    keys: tuple[str, ...]
    reason: str
    event: dict[str, Any]  # what the runner's handler is given when no job record is found
    job: JobRef | None = None  # the job record it names, redriven in place when still there
    redrive_of: str | None = None
    attempts: int | None = None
    log_stream: str | None = None


def _environment(entries: Any) -> dict[str, str]:
    if not isinstance(entries, list):
        return {}
    return {
        e["name"]: e["value"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("name"), str) and "value" in e
    }


def upload_event(bucket: str, key: str, version_id: str | None, redrive_of: str) -> dict[str, Any]:
    """An S3 ObjectCreated event for one upload, encoded as S3 encodes keys, asking the runner
    to redrive it.

    The runner tells uploads of one key apart by their version, else by S3's sequencer. A
    message that carries neither gets a sequencer derived from its redriveOf: replaying the same
    message twice then names the same upload, and the runner records it once.
    """
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/")}
    if version_id:
        obj["versionId"] = version_id
    else:
        obj["sequencer"] = hashlib.sha256(redrive_of.encode()).hexdigest()[:16].upper()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": obj},
            }
        ],
        REDRIVE_FIELD: redrive_of,
    }


def _body(source: Source, message: Mapping[str, Any]) -> dict[str, Any]:
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
    return body


def plan(source: Source, message: Mapping[str, Any]) -> Replay:
    """What replaying this message means; UnreadableMessageError names what is wrong with it."""
    body = _body(source, message)
    if source == "dead-letter":
        return _dead_letter(message, body)
    return _failed_job(message, body)


def _failed_job(message: Mapping[str, Any], body: dict[str, Any]) -> Replay:
    message_id = str(message.get("MessageId", "?"))
    env = _environment(body.get("environment"))
    bucket = body.get("bucket") or env.get("S3_BUCKET")
    key = body.get("key") or env.get("S3_KEY")
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
        raise UnreadableMessageError(
            f"message {message_id} in the failed-jobs queue names no upload (no bucket and key, "
            "nor S3_BUCKET and S3_KEY in its environment): it did not come from the runner or "
            "a task it started"
        )
    version_id = body.get("versionId") or env.get("S3_VERSION_ID") or None
    # Older messages (EventBridge's) have no redriveOf: the failed task names the failure.
    redrive_of = str(body.get(REDRIVE_FIELD) or body.get("taskArn") or message_id)
    job_id = body.get("jobId") or env.get("JOB_ID")
    attempts = body.get("attemptCount")
    if not isinstance(attempts, int):
        listed = body.get("attempts")
        attempts = len(listed) if isinstance(listed, list) and listed else None
    task_id = str(body.get("taskArn") or "").rsplit("/", 1)[-1]
    exit_code = body.get("exitCode")
    reason = str(
        body.get("reason")
        or f"{body.get('stopCode', '?')}: {body.get('stoppedReason', '?')} (exit code "
        f"{'none' if exit_code is None else exit_code})"
    )
    stream = body.get("logStream")
    return Replay(
        source="failed-jobs",
        message_id=message_id,
        receipt_handle=str(message["ReceiptHandle"]),
        kind="upload",
        keys=(key,),
        reason=reason,
        event=upload_event(bucket, key, version_id, redrive_of),
        job=JobRef(bucket, key, str(job_id)) if job_id else None,
        redrive_of=redrive_of,
        attempts=attempts,
        log_stream=str(stream).replace("{task id}", task_id) if stream else None,
    )


def _keys_of(event: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        unquote_plus(str(((r.get("s3") or {}).get("object") or {}).get("key", "?")))
        for r in event.get("Records") or []
        if isinstance(r, dict)
    )


def _job_named(event: Mapping[str, Any]) -> JobRef | None:
    """The job a runner's own dead letter replays: its redriveOf starts with the job's id."""
    job_id = job_id_named(event.get(REDRIVE_FIELD))
    records = event.get("Records") or []
    if job_id is None or len(records) != 1 or not isinstance(records[0], dict):
        return None
    s3 = records[0].get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    (key,) = _keys_of(event)
    return JobRef(str(bucket), key, job_id) if bucket else None


def _dead_letter(message: Mapping[str, Any], body: dict[str, Any]) -> Replay:
    message_id = str(message.get("MessageId", "?"))
    receipt = str(message["ReceiptHandle"])
    if "requestPayload" in body:
        return _lambda_failure(message_id, receipt, body)
    # The S3 event itself: the runner's report of a job that never ran (the reason in an
    # attribute), or an upload the backlog gave up on (moved by SQS after its most receives).
    if not isinstance(body.get("Records"), list) or not body["Records"]:
        raise UnreadableMessageError(
            f"message {message_id} in the dead-letter queue is neither a Lambda on-failure "
            "record nor an S3 event from the runner or the backlog"
        )
    attribute = (message.get("MessageAttributes") or {}).get(BACKLOG_REASON_ATTRIBUTE) or {}
    reason = str(
        attribute.get("StringValue")
        or "moved from the backlog by SQS after its most receives (the runner kept failing)"
    )
    redrive_of = body.get(REDRIVE_FIELD)
    return Replay(
        source="dead-letter",
        message_id=message_id,
        receipt_handle=receipt,
        kind="upload",
        keys=_keys_of(body),
        reason=reason,
        event=body,
        job=_job_named(body),
        redrive_of=str(redrive_of) if redrive_of else None,
    )


def _lambda_failure(message_id: str, receipt: str, body: dict[str, Any]) -> Replay:
    """Lambda's on-failure record: the invocation's event, replayed as it was."""
    event = body.get("requestPayload")
    response = body.get("responsePayload") or {}
    context = body.get("requestContext") or {}
    condition = context.get("condition", "failed")
    reason = f"{condition}: {response.get('errorMessage', 'no error message')}"
    if isinstance(event, dict) and is_task_event(event):
        detail = event.get("detail") or {}
        env: dict[str, str] = {}
        for override in (detail.get("overrides") or {}).get("containerOverrides") or []:
            env |= _environment(override.get("environment"))
        keys = (env["S3_KEY"],) if env.get("S3_KEY") else ()
        return Replay("dead-letter", message_id, receipt, "task-stop", keys, reason, event)
    if isinstance(event, dict) and is_sweep_event(event):
        return Replay("dead-letter", message_id, receipt, "sweep", (), reason, event)
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("Records"), list)
        or not event["Records"]
    ):
        raise UnreadableMessageError(
            f"message {message_id} in the dead-letter queue is a Lambda on-failure record of "
            "an event that is neither S3's, an ECS task state change nor the sweep's schedule"
        )
    replayed = dict(event)
    # A failed job of this upload waits again (once per message): the invocation's request id
    # names this failure, as a report's redriveOf does.
    replayed.setdefault(REDRIVE_FIELD, f"lambda:{context.get('requestId') or message_id}")
    return Replay(
        "dead-letter",
        message_id,
        receipt,
        "upload",
        _keys_of(event),
        reason,
        replayed,
        job=_job_named(replayed),
        redrive_of=str(replayed[REDRIVE_FIELD]),
    )


# --- replaying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restart:
    """What replaying one message did: whether it may be deleted, and in words."""

    done: bool
    said: str
    needs_sweep: bool = False  # its job waits: the sweep at the end starts it
    after_sweep: bool = False  # its work is the sweep itself: deleted once it ran


def _by_record(job: Job, replay: Replay) -> tuple[bool, str] | None:
    """For a job found in the table: (may the message go, what to say), or None to redrive."""
    if job.state == "failed":
        if replay.redrive_of is not None and job.last_redrive_of == replay.redrive_of:
            return True, (
                "redriven from this message already; it failed again since, and that failure "
                "has its own message"
            )
        return None
    if job.state == "succeeded":
        return True, "its job has succeeded since: nothing to restart"
    return True, f"its job is {job.state} again: nothing to restart"


def restart(replay: Replay, runner: RunnerHandle) -> Restart:
    """Replay one message through the runner; raises what the runner or the table raised."""
    if replay.kind == "sweep":
        return Restart(False, "the runner's sweep runs once, after every message", after_sweep=True)
    if replay.job is not None:
        ref = replay.job
        job = runner.store.get(ref.bucket, ref.key, ref.job_id)
        if job is not None:
            known = _by_record(job, replay)
            if known is not None:
                return Restart(known[0], known[1])
            # The runner's own redrive of the record (uploads.Recorder), as an S3 event
            # carrying redriveOf would make it, had the event kept the upload's identity.
            redrive_of = replay.redrive_of or replay.message_id
            written = Recorder(runner.store, runner.services).redrive(job, redrive_of)
            if written.state != "waiting":
                return Restart(False, "its record changed meanwhile: kept for the next redrive")
            return Restart(
                True,
                f"its job waits again for attempt {written.attempt_count + 1} (a fresh budget of "
                "attempts); the sweep below starts it",
                needs_sweep=True,
            )
    answer = runner(replay.event, None)
    return Restart(True, _describe(replay.kind, answer))


def _describe(kind: Kind, answer: Any) -> str:
    if not isinstance(answer, dict):
        return f"replayed: {answer!r}"
    if kind == "task-stop":
        return f"replayed the task's stop: {answer.get('outcome')} ({answer.get('state', '-')})"
    parts = []
    for name, what in (
        ("started", "started"),
        ("waiting", "waits for a slot"),
        ("parked", "parked in the backlog"),
        ("skipped", "skipped"),
    ):
        listed = answer.get(name) or {}
        if listed:
            parts.append(f"{what}: {', '.join(sorted(listed))}")
    return "replayed: " + ("; ".join(parts) or "nothing to do")


def preview(replay: Replay, store: JobStore | None) -> str:
    """What a redrive would do, reading the job table but changing nothing."""
    if replay.kind == "sweep":
        return "would run the runner's sweep"
    if replay.job is not None and store is not None:
        job = store.get(replay.job.bucket, replay.job.key, replay.job.job_id)
        if job is not None:
            known = _by_record(job, replay)
            if known is not None:
                return f"would delete the message: {known[1]}"
            return f"would make its failed job wait again (it made {job.attempt_count} attempts)"
    return "would replay its event through the runner"


# --- the queues ---------------------------------------------------------------------------------


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


def runner_environment(function_name: str) -> dict[str, str]:
    """The deployed runner's configuration: the same cluster, task definition, table, queues."""
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=function_name)
    variables: dict[str, str] = (configuration.get("Environment") or {}).get("Variables", {})
    return variables


@dataclass
class Totals:
    restarted: int = 0
    kept: int = 0
    unreadable: int = 0
    deleted: list[str] = field(default_factory=list)  # message ids


def _describe_message(replay: Replay, say: Printer) -> None:
    keys = ", ".join(replay.keys) or "(no upload)"
    attempts = f" after {replay.attempts} attempts" if replay.attempts else ""
    say(f"{replay.source:<12} {keys}{attempts}: {replay.reason}")
    if replay.log_stream:
        say(f"             logs: {replay.log_stream}")


def redrive(
    queues: Mapping[Source, str],
    runner: RunnerHandle | None,
    *,
    dry_run: bool,
    limit: int,
    say: Printer,
    store: JobStore | None = None,
) -> Totals:
    """Replay every message; delete a message only once its work is safe again."""
    sqs = boto3.client("sqs")
    totals = Totals()
    if runner is not None and store is None:
        store = runner.store
    swept: list[tuple[str, Replay]] = []  # messages whose work is the final sweep
    sweep_wanted = False
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
            _describe_message(replay, say)
            if dry_run or runner is None:
                try:
                    said = preview(replay, store)
                except StoreError as error:
                    said = f"would replay it (the job table could not be read: {error})"
                say(f"             {said} (dry run)")
                untouched.append(replay)
                continue
            try:
                outcome = restart(replay, runner)
            except Exception as error:  # the runner raises for every upload it could not record
                totals.kept += 1
                say(f"             not restarted, message kept: {error}")
                untouched.append(replay)
                continue
            say(f"             {outcome.said}")
            sweep_wanted |= outcome.needs_sweep or outcome.after_sweep
            if outcome.after_sweep:
                swept.append((url, replay))
            elif outcome.done:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=replay.receipt_handle)
                totals.deleted.append(replay.message_id)
                totals.restarted += 1
            else:
                totals.kept += 1
                untouched.append(replay)
        for replay in untouched:
            _release(sqs, url, replay)
    if sweep_wanted and runner is not None:
        _final_sweep(runner, swept, sqs, totals, say)
    return totals


def _final_sweep(
    runner: RunnerHandle,
    swept: list[tuple[str, Replay]],
    sqs: Any,
    totals: Totals,
    say: Printer,
) -> None:
    """One sweep through the runner: it starts the jobs that wait again into the free slots."""
    try:
        done = runner.sweep()
    except Exception as error:  # the deployed sweep runs within a minute anyway
        say(
            f"sweep    failed ({error}); the deployed sweep starts the waiting jobs within a minute"
        )
        totals.kept += len(swept)
        for url, replay in swept:
            _release(sqs, url, replay)
        return
    started = done.get("started", 0) if isinstance(done, dict) else 0
    say(
        f"sweep    the runner's sweep started {started} tasks; jobs still waiting start as "
        "slots free"
    )
    for url, replay in swept:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=replay.receipt_handle)
        totals.deleted.append(replay.message_id)
        totals.restarted += 1


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
        try:
            outputs = deployed_outputs(
                stack,
                instead="pass --dead-letter-queue-url, --failed-jobs-queue-url and --function",
            )
        except StackError as error:
            raise RedriveError(str(error)) from error
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


def deployed_runner(function_name: str | None) -> RunnerHandle:
    if not function_name:
        raise RedriveError("restarting needs the runner: pass --stack or --function")
    # The runner's metric lines are for CloudWatch Logs in Lambda; here nobody reads them.
    return load_runner(runner_environment(function_name), emit_metric=lambda line: None)


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
        runner = None if dry_run else deployed_runner(function_name)
        store = None
        if dry_run and function_name:
            # Read-only: the job table the runner writes, to say what each message would do.
            store = deployed_runner(function_name).store
    except RedriveError as error:
        say(f"error: {error}")
        return 2
    totals = redrive(queues, runner, dry_run=dry_run, limit=limit, say=say, store=store)
    say("")
    say(
        f"{totals.restarted} restarted, {totals.kept} kept after a failed restart, "
        f"{totals.unreadable} unreadable (left in place)"
    )
    return 0 if totals.kept == 0 and totals.unreadable == 0 else 1


def register(commands: Any) -> None:
    replay = commands.add_parser(
        "redrive",
        help="restart the uploads waiting in the dead-letter and failed-jobs queues",
        description=(
            "Read the runner's dead-letter queue and the failed-jobs queue and restart the work "
            "of each message through the deployed runner's code and configuration, with your "
            "AWS credentials (ecs:RunTask, iam:PassRole on the job roles, sqs, the job table, "
            "lambda:GetFunctionConfiguration). A failed job still in the job table waits again "
            "with a fresh budget of attempts, once however often its message is replayed. A "
            "message is deleted only once its work is safe again."
        ),
    )
    replay.add_argument(
        "--stack", help="read queue URLs and the runner's name from this stack's outputs"
    )
    replay.add_argument("--dead-letter-queue-url", help="the runner's dead-letter queue")
    replay.add_argument("--failed-jobs-queue-url", help="the failed-jobs queue")
    replay.add_argument("--function", help="the runner Lambda's name")
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be restarted; change nothing"
    )
    replay.add_argument(
        "--limit", type=int, default=1000, help="at most this many messages per queue (1000)"
    )
    replay.set_defaults(command=command)


def command(args: argparse.Namespace, say: Printer) -> int:
    if args.limit < 1:
        say(f"error: --limit {args.limit}: give 1 or more messages")
        return 2
    return run(
        stack=args.stack,
        dead_letter_queue_url=args.dead_letter_queue_url,
        failed_jobs_queue_url=args.failed_jobs_queue_url,
        function=args.function,
        dry_run=args.dry_run,
        limit=args.limit,
        say=say,
    )
