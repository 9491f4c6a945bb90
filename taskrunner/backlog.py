"""The backlog: an SQS queue where uploads wait for capacity, consumed by the runner itself.

An upload that cannot start now (ECS capacity, throttling, the account's quota, the task cap,
a lost answer) is parked as a one-record S3 event. The event source mapping hands it back in
batches; each time it still cannot start, it is made invisible for a longer while (doubling up
to `max_retry_seconds`, jittered so a big batch does not come back at once) and reported in
`batchItemFailures`. It may wait as long as the queue keeps it. Only what waiting cannot mend
(ECS rejects the request, the message is not an upload, it waited 13 days) is moved to the
dead-letter queue, at once and saying why.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from botocore.exceptions import BotoCoreError, ClientError
from outcomes import RecordResult
from runner_settings import RunnerSettings
from services import Services
from upload_events import REDRIVE_FIELD, BacklogMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef

# The backlog queue's maxReceiveCount (infra/runner.py sets the same): SQS's largest. Every
# deferral is a receive, so the longest delay must keep 13 days of waiting under this count.
MAX_RECEIVES = 1000
# The queue keeps a message 14 days from when it was parked; a day less leaves room for the
# longest delay, so an upload is dead-lettered by the runner (saying why), never expired.
MAX_WAIT_SECONDS = 13 * 24 * 3600
# After a passing fault the delay grows to four times the first at most (2 minutes by default).
PASSING_FAULT_ATTEMPTS = 3
SQS_BATCH = 10  # entries per ChangeMessageVisibilityBatch call
MAX_MESSAGE_DELAY_SECONDS = 900  # SQS's limit for DelaySeconds on a new message
MAX_REASON_CHARACTERS = 4000
REASON_ATTRIBUTE = "reason"
# How long the oldest upload still waiting has waited: an embedded-metric log line that
# CloudWatch turns into a metric, watched by the backlog's alarm (infra/monitoring.py has the
# same names). SQS's ApproximateAgeOfOldestMessage skips messages received three times or more;
# the alarm watches it too, for when the runner does not run at all.
METRIC_NAMESPACE = "S3FargateJobs"
WAIT_METRIC = "OldestWaitSeconds"
METRIC_DIMENSION = "Backlog"


class BatchItemFailure(TypedDict):
    itemIdentifier: str  # a message id of the batch


class BatchResponse(TypedDict):
    """The partial batch response: the messages the event source mapping must keep."""

    batchItemFailures: list[BatchItemFailure]


def retry_delay(attempt: int, settings: RunnerSettings, rng: random.Random) -> int:
    """Seconds before try number `attempt` + 1: doubling from the first retry, capped, and
    jittered down to half so that uploads parked together spread out."""
    ceiling = min(
        settings.max_retry_seconds, settings.first_retry_seconds * 2 ** min(attempt - 1, 30)
    )
    return max(1, int(ceiling * rng.uniform(0.5, 1.0)))


def parked_body(record: object, redrive_of: object) -> str:
    """The message for one upload: the record as S3 sent it, so its token is unchanged."""
    event: dict[str, Any] = {"Records": [record]}
    if isinstance(redrive_of, str) and redrive_of:
        event[REDRIVE_FIELD] = redrive_of
    return json.dumps(event, ensure_ascii=False)


def park(
    record: object,
    why: RecordResult,
    settings: RunnerSettings,
    services: Services,
    *,
    redrive_of: object = None,
) -> RecordResult:
    """Send an upload that must wait to the backlog; `failed` (naming why) if SQS refuses."""
    upload = why.upload
    delay = min(MAX_MESSAGE_DELAY_SECONDS, retry_delay(1, settings, services.rng))
    try:
        services.sqs.send_message(
            QueueUrl=settings.backlog_queue_url,
            MessageBody=parked_body(record, redrive_of),
            DelaySeconds=delay,
        )
    except (ClientError, BotoCoreError) as error:
        return RecordResult(
            "failed", upload, reason=f"{why.reason}; parking it in the backlog failed: {error}"
        )
    return RecordResult(
        "parked",
        upload,
        reason=f"waits in the backlog, next try in {delay} s: {why.reason}",
        maybe_started=why.maybe_started,
    )


@dataclass(frozen=True)
class Verdict:
    """What becomes of one backlog message: done (deleted), deferred, or dead-lettered."""

    message: BacklogMessage
    action: str  # "done", "defer", "dead-letter"
    reason: str = ""
    attempt: int = 1  # the delay before the next try is retry_delay(attempt)


def decide(
    message: BacklogMessage, results: list[RecordResult], now: float, reasons: list[str]
) -> Verdict:
    """One message's fate from its uploads' results (and problems found reading it)."""
    failed = [r.reason or r.outcome for r in results if r.outcome == "failed"] + reasons
    if failed:
        return Verdict(message, "dead-letter", "; ".join(failed))
    waiting = [r.reason or "waiting" for r in results if r.outcome == "waiting"]
    if not waiting:
        return Verdict(message, "done")
    waited = now - message.sent_at
    if waited >= MAX_WAIT_SECONDS:
        days = waited / 86400
        return Verdict(
            message,
            "dead-letter",
            f"waited {days:.1f} days in the backlog without capacity (the queue keeps messages "
            f"14 days): {waiting[0]}",
        )
    if message.receive_count >= MAX_RECEIVES:
        return Verdict(
            message,
            "dead-letter",
            f"tried {message.receive_count} times, the backlog's most (SQS would move it on the "
            f"next receive): {waiting[0]}",
        )
    return Verdict(message, "defer", waiting[0], attempt=_next_attempt(message, results))


def _next_attempt(message: BacklogMessage, results: list[RecordResult]) -> int:
    """How far the delay has grown: with every try while the upload waits its turn; only up
    to the third for a passing fault; not at all after a lost answer, since until ECS is asked
    again the cap keeps a place for a task that may be running."""
    waiting = [r for r in results if r.outcome == "waiting"]
    if any(r.maybe_started for r in waiting):
        return 1
    grown = message.receive_count + 1
    if all(r.full for r in waiting):
        return grown
    return min(grown, PASSING_FAULT_ATTEMPTS)


def defer(verdicts: list[Verdict], settings: RunnerSettings, services: Services) -> dict[str, int]:
    """Make each deferred message invisible for its next delay; message id -> delay set.

    A message whose visibility could not be changed still comes back, after the queue's
    visibility timeout: it is reported as a batch item failure either way.
    """
    entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = []
    delays: dict[str, int] = {}
    for number, verdict in enumerate(verdicts):
        delay = retry_delay(verdict.attempt, settings, services.rng)
        delays[verdict.message.message_id] = delay
        entries.append(
            {
                "Id": str(number),
                "ReceiptHandle": verdict.message.receipt_handle,
                "VisibilityTimeout": delay,
            }
        )
    for start in range(0, len(entries), SQS_BATCH):
        try:
            answer = services.sqs.change_message_visibility_batch(
                QueueUrl=settings.backlog_queue_url, Entries=entries[start : start + SQS_BATCH]
            )
        except (ClientError, BotoCoreError):
            for entry in entries[start : start + SQS_BATCH]:
                delays.pop(verdicts[int(entry["Id"])].message.message_id, None)
            continue
        for failed in answer.get("Failed", []):
            delays.pop(verdicts[int(failed["Id"])].message.message_id, None)
    return delays


def dead_letter(verdict: Verdict, settings: RunnerSettings, services: Services) -> bool:
    """Move a message to the dead-letter queue, its reason attached; False if SQS refused."""
    try:
        services.sqs.send_message(
            QueueUrl=settings.dead_letter_queue_url,
            MessageBody=verdict.message.body,
            MessageAttributes={
                REASON_ATTRIBUTE: {
                    "DataType": "String",
                    "StringValue": verdict.reason[:MAX_REASON_CHARACTERS] or "unknown",
                }
            },
        )
    except (ClientError, BotoCoreError):
        return False
    return True


def parse_body(message: BacklogMessage) -> tuple[object, str | None]:
    """The S3 event a backlog message carries, or (None, why it is not one)."""
    try:
        event = json.loads(message.body)
    except json.JSONDecodeError:
        return None, f"message {message.message_id} is not JSON: not an upload the runner parked"
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        return None, (
            f"message {message.message_id} is not an S3 event with Records: not an upload the "
            "runner parked"
        )
    return event, None


def wait_metric(queue_url: str, waited_seconds: float, now: float) -> str:
    """The embedded-metric-format line for how long the oldest deferred upload has waited."""
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(now * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": METRIC_NAMESPACE,
                        "Dimensions": [[METRIC_DIMENSION]],
                        "Metrics": [{"Name": WAIT_METRIC, "Unit": "Seconds"}],
                    }
                ],
            },
            METRIC_DIMENSION: queue_url.rstrip("/").rsplit("/", 1)[-1],
            WAIT_METRIC: round(waited_seconds),
        }
    )
