"""The backlog: an SQS queue for uploads the job table could not take, consumed by the runner.

Waiting for a task slot happens in the job table (scheduler.py), not here. An upload comes
here only when recording its job failed (DynamoDB throttling or unavailable, after botocore's
retries): it is parked as a one-record S3 event and the event source mapping hands it back. If
recording fails again, it is hidden for a longer while (doubling, jittered, up to
`max_retry_seconds`): a failing dependency is given room. It may wait as long as the queue keeps
it; at 13 days, or SQS's most receives, it goes to the dead-letter queue with the reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from botocore.exceptions import BotoCoreError, ClientError
from runner_settings import RunnerSettings
from services import Services
from upload_events import REDRIVE_FIELD, BacklogMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef

# The backlog queue's maxReceiveCount (infra/runner.py sets the same): SQS's largest.
MAX_RECEIVES = 1000
# The queue keeps a message 14 days from when it was parked; a day less leaves room for the
# longest delay, so an upload is dead-lettered by the runner (saying why), never expired.
MAX_WAIT_SECONDS = 13 * 24 * 3600
SQS_BATCH = 10  # entries per ChangeMessageVisibilityBatch call
MAX_MESSAGE_DELAY_SECONDS = 900  # SQS's limit for DelaySeconds on a new message
MAX_REASON_CHARACTERS = 4000
REASON_ATTRIBUTE = "reason"


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
    """The message for one upload: the record as S3 sent it, so its job id is unchanged."""
    event: dict[str, Any] = {"Records": [record]}
    if isinstance(redrive_of, str) and redrive_of:
        event[REDRIVE_FIELD] = redrive_of
    return json.dumps(event, ensure_ascii=False)


def park(
    record: object, redrive_of: object, settings: RunnerSettings, services: Services
) -> str | None:
    """Send an upload to the backlog; None once sent, else why SQS refused it."""
    delay = min(MAX_MESSAGE_DELAY_SECONDS, retry_delay(1, settings, services.rng))
    try:
        services.sqs.send_message(
            QueueUrl=settings.backlog_queue_url,
            MessageBody=parked_body(record, redrive_of),
            DelaySeconds=delay,
        )
    except (ClientError, BotoCoreError) as error:
        return str(error)
    return None


def give_up_reason(message: BacklogMessage, now: float, why: str) -> str | None:
    """Why a message that still cannot be recorded must go to the dead-letter queue, or None."""
    waited = now - message.sent_at
    if waited >= MAX_WAIT_SECONDS:
        return f"waited {waited / 86400:.1f} days in the backlog (the queue keeps 14): {why}"
    if message.receive_count >= MAX_RECEIVES:
        return (
            f"tried {message.receive_count} times, the backlog's most (SQS would move it on the "
            f"next receive): {why}"
        )
    return None


def defer(
    messages: list[BacklogMessage], settings: RunnerSettings, services: Services
) -> dict[str, int]:
    """Hide each message for its next delay; message id -> delay set.

    A message whose visibility could not be changed still comes back, after the queue's
    visibility timeout: it is reported as a batch item failure either way.
    """
    entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = []
    delays: dict[str, int] = {}
    for number, message in enumerate(messages):
        delay = retry_delay(message.receive_count + 1, settings, services.rng)
        delays[message.message_id] = delay
        entries.append(
            {"Id": str(number), "ReceiptHandle": message.receipt_handle, "VisibilityTimeout": delay}
        )
    for start in range(0, len(entries), SQS_BATCH):
        try:
            answer = services.sqs.change_message_visibility_batch(
                QueueUrl=settings.backlog_queue_url, Entries=entries[start : start + SQS_BATCH]
            )
        except (ClientError, BotoCoreError):
            for entry in entries[start : start + SQS_BATCH]:
                delays.pop(messages[int(entry["Id"])].message_id, None)
            continue
        for failed in answer.get("Failed", []):
            delays.pop(messages[int(failed["Id"])].message_id, None)
    return delays


def dead_letter(
    message: BacklogMessage, reason: str, settings: RunnerSettings, services: Services
) -> bool:
    """Move a message to the dead-letter queue, its reason attached; False if SQS refused."""
    try:
        services.sqs.send_message(
            QueueUrl=settings.dead_letter_queue_url,
            MessageBody=message.body,
            MessageAttributes={
                REASON_ATTRIBUTE: {
                    "DataType": "String",
                    "StringValue": reason[:MAX_REASON_CHARACTERS] or "unknown",
                }
            },
        )
    except (ClientError, BotoCoreError):
        return False
    return True


def parse_body(message: BacklogMessage) -> tuple[Mapping[str, Any] | None, str | None]:
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
