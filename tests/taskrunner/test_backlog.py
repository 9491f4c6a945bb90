"""The backlog path: uploads the job table could not take, handed back by the event source
mapping; recorded once the table takes them, hidden for longer while it does not."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from backlog import MAX_RECEIVES, MAX_WAIT_SECONDS, REASON_ATTRIBUTE, retry_delay
from dispatch import route
from runner_settings import RunnerSettings
from services import Services
from upload_events import MalformedEventError, is_backlog_event
from uploads import handle_backlog

from tests.taskrunner.conftest import RUNNER_ENV, RecordingSqs, World, s3_event, s3_record
from tests.taskrunner.test_uploads import FailingDynamo


def sqs_record(
    body: Any, message_id: str, *, receive_count: int = 1, parked_seconds_ago: float = 60
) -> dict[str, Any]:
    """A record as the event source mapping hands it to the function."""
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": str(int((time.time() - parked_seconds_ago) * 1000)),
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs-backlog",
    }


def batch(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def run(world: World, event: Any, sqs: RecordingSqs, *, table_fails: bool = False) -> list[str]:
    """The message ids the runner asks to keep (its partial batch response)."""
    services = Services(
        world.services.ecs,
        sqs=sqs,  # type: ignore[arg-type]
        dynamodb=FailingDynamo() if table_fails else world.services.dynamodb,  # type: ignore[arg-type]
        rng=random.Random(7),
        emit_metric=lambda line: None,
    )
    answer = handle_backlog(event, world.settings, services)
    assert set(answer) == {"batchItemFailures"}
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def dead_letters(sqs: RecordingSqs, world: World) -> list[tuple[Any, str]]:
    """(body, reason) of every message sent to the dead-letter queue."""
    return [
        (_json_or_text(m["MessageBody"]), m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])
        for m in sqs.sent
        if m["QueueUrl"] == world.settings.dead_letter_queue_url
    ]


def _json_or_text(body: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def test_an_sqs_batch_is_told_apart_from_an_s3_event() -> None:
    assert is_backlog_event(batch(sqs_record(s3_event(s3_record("uploads/a.csv")), "1")))
    assert not is_backlog_event(s3_event(s3_record("uploads/a.csv")))
    assert not is_backlog_event({"Records": []})


def test_a_parked_upload_is_recorded_started_and_its_message_deleted(world: World) -> None:
    sqs = RecordingSqs()
    event = batch(sqs_record(s3_event(s3_record("uploads/a b.csv")), "1", receive_count=3))
    assert run(world, event, sqs) == []
    assert world.job("uploads/a b.csv").state == "starting"
    (call,) = world.ecs.calls
    assert call.s3_key == "uploads/a b.csv"
    assert sqs.visibility == []


def test_a_parked_upload_waiting_for_a_slot_waits_in_the_table_not_the_backlog(
    world: World,
) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    capped.upload(s3_record("uploads/first.csv"))
    event = batch(sqs_record(s3_event(s3_record("uploads/b.csv", sequencer="02")), "1"))
    assert run(capped, event, RecordingSqs()) == []  # deleted: the job table has it
    assert capped.job("uploads/b.csv").state == "waiting"


def test_an_upload_the_table_still_cannot_take_is_kept_and_hidden_for_longer(
    world: World,
) -> None:
    sqs = RecordingSqs()
    event = batch(
        sqs_record(s3_event(s3_record("uploads/a.csv", sequencer="01")), "1", receive_count=1),
        sqs_record(s3_event(s3_record("uploads/b.csv", sequencer="02")), "2", receive_count=6),
    )
    assert run(world, event, sqs, table_fails=True) == ["1", "2"]
    (change,) = sqs.visibility
    first, second = (entry["VisibilityTimeout"] for entry in change["Entries"])
    assert first <= 2 * world.settings.first_retry_seconds
    assert second > first
    assert world.ecs.calls == []


def test_an_upload_the_table_has_refused_for_13_days_goes_to_the_dead_letter_queue(
    world: World,
) -> None:
    sqs = RecordingSqs()
    body = s3_event(s3_record("uploads/a.csv"))
    event = batch(sqs_record(body, "1", parked_seconds_ago=MAX_WAIT_SECONDS))
    assert run(world, event, sqs, table_fails=True) == []
    ((dead_body, reason),) = dead_letters(sqs, world)
    assert dead_body == body
    assert reason.startswith("waited 13.0 days in the backlog")
    assert "ProvisionedThroughputExceeded" in reason


def test_an_upload_at_the_last_receive_sqs_allows_goes_to_the_dead_letter_queue(
    world: World,
) -> None:
    sqs = RecordingSqs()
    event = batch(sqs_record(s3_event(s3_record("a.csv")), "1", receive_count=MAX_RECEIVES))
    assert run(world, event, sqs, table_fails=True) == []
    ((_, reason),) = dead_letters(sqs, world)
    assert reason.startswith(f"tried {MAX_RECEIVES} times")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "is not JSON"),
        ({"Records": "none"}, "not an S3 event with Records"),
        ({"Records": [{"eventSource": "aws:s3"}]}, "malformed record 0"),
    ],
)
def test_a_message_that_is_not_an_upload_goes_to_the_dead_letter_queue(
    body: Any, says: str, world: World
) -> None:
    sqs = RecordingSqs()
    assert run(world, batch(sqs_record(body, "1")), sqs) == []
    ((_, reason),) = dead_letters(sqs, world)
    assert says in reason
    assert world.ecs.calls == []


def test_a_message_the_dead_letter_queue_refuses_is_kept_to_be_tried_again(world: World) -> None:
    assert run(world, batch(sqs_record("not json", "1")), RecordingSqs(refuse=True)) == ["1"]


def test_removals_and_results_in_a_parked_event_are_done_without_a_job(world: World) -> None:
    body = s3_event(
        s3_record("uploads/old.csv", event_name="ObjectRemoved:Delete"),
        s3_record("results/uploads/a.csv.json"),
    )
    sqs = RecordingSqs()
    assert run(world, batch(sqs_record(body, "1")), sqs) == []
    assert world.ecs.calls == []
    assert sqs.sent == []


def test_a_record_without_a_message_id_fails_the_whole_batch(settings: RunnerSettings) -> None:
    record = sqs_record(s3_event(s3_record("uploads/a.csv")), "1")
    del record["messageId"]
    with pytest.raises(MalformedEventError, match="messageId"):
        route(batch(record), settings, Services(None))  # type: ignore[arg-type]


def test_a_big_batch_is_hidden_again_ten_messages_per_call_as_sqs_requires(world: World) -> None:
    sqs = RecordingSqs()
    event = batch(
        *(
            sqs_record(s3_event(s3_record(f"uploads/{n}.csv", sequencer=f"{n:02d}")), str(n))
            for n in range(25)
        )
    )
    assert len(run(world, event, sqs, table_fails=True)) == 25
    assert [len(call["Entries"]) for call in sqs.visibility] == [10, 10, 5]


# --- delays ---------------------------------------------------------------------------------


def test_the_delay_doubles_from_the_first_retry_up_to_the_longest(
    settings: RunnerSettings,
) -> None:
    rng = random.Random(3)
    first, longest = settings.first_retry_seconds, settings.max_retry_seconds
    for attempt in range(1, 12):
        ceiling = min(first * 2 ** (attempt - 1), longest)
        most = max(retry_delay(attempt, settings, rng) for _ in range(200))
        assert 0.95 * ceiling <= most <= ceiling


def test_delays_are_jittered_down_to_half_so_a_parked_batch_spreads_out(
    settings: RunnerSettings,
) -> None:
    delays = {retry_delay(20, settings, random.Random(seed)) for seed in range(100)}
    assert min(delays) >= settings.max_retry_seconds // 2
    assert len(delays) > 50


def test_thirteen_days_of_the_longest_delay_stay_under_sqs_receive_limit(
    settings: RunnerSettings,
) -> None:
    shortest_longest_delay = settings.max_retry_seconds / 2
    assert MAX_WAIT_SECONDS / shortest_longest_delay < MAX_RECEIVES
    assert RUNNER_ENV["BACKLOG_QUEUE_URL"].endswith("jobs-backlog")
