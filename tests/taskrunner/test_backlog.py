"""The backlog path: a batch of parked uploads from the event source mapping."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from backlog import (
    MAX_RECEIVES,
    MAX_WAIT_SECONDS,
    PASSING_FAULT_ATTEMPTS,
    REASON_ATTRIBUTE,
    retry_delay,
)
from dispatch import process_backlog, process_event
from runner_settings import RunnerSettings
from services import Services
from upload_events import MalformedEventError, is_backlog_event

from tests.fakes.fake_ecs import FakeEcs, Fault
from tests.taskrunner.conftest import RUNNER_ENV, RecordingSqs, s3_event, s3_record

NOW = 1_795_000_000.0


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
            "SentTimestamp": str(int((NOW - parked_seconds_ago) * 1000)),
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs-backlog",
    }


def batch(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def run(event: Any, settings: RunnerSettings, ecs: Any, sqs: RecordingSqs) -> list[str]:
    """The message ids the runner asks to keep (its partial batch response)."""
    services = Services(ecs, sqs=sqs, clock=lambda: NOW, rng=random.Random(7))  # type: ignore[arg-type]
    answer = process_backlog(event, settings, services)
    assert set(answer) == {"batchItemFailures"}
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def dead_letters(sqs: RecordingSqs) -> list[tuple[Any, str]]:
    """(body, reason) of every message sent to the dead-letter queue."""
    return [
        (_json_or_text(m["MessageBody"]), m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])
        for m in sqs.sent
        if m["QueueUrl"] == RUNNER_ENV["DEAD_LETTER_QUEUE_URL"]
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


def test_a_parked_upload_that_can_start_now_starts_and_its_message_is_deleted(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    sqs = RecordingSqs()
    event = batch(sqs_record(s3_event(s3_record("uploads/a b.csv")), "1", receive_count=3))
    assert run(event, settings, fake_ecs.client(), sqs) == []
    (task,) = fake_ecs.tasks
    environment = task["overrides"]["containerOverrides"][0]["environment"]
    assert {"name": "S3_KEY", "value": "uploads/a b.csv"} in environment
    assert sqs.sent == sqs.visibility == []


def test_an_upload_that_still_cannot_start_is_kept_and_hidden_for_a_longer_delay(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    quota = "You've reached the limit on the number of vCPUs you can run concurrently"
    fake_ecs.inject(Fault.failure(quota), times=None)
    sqs = RecordingSqs()
    event = batch(
        sqs_record(s3_event(s3_record("uploads/a.csv", sequencer="01")), "1", receive_count=1),
        sqs_record(s3_event(s3_record("uploads/b.csv", sequencer="02")), "2", receive_count=6),
    )
    assert run(event, settings, fake_ecs.client(), sqs) == ["1", "2"]
    # The quota holds for the whole account: the second upload waits without asking again.
    assert len(fake_ecs.calls) == 1
    (change,) = sqs.visibility
    first, second = (entry["VisibilityTimeout"] for entry in change["Entries"])
    assert settings.first_retry_seconds <= first <= 2 * settings.first_retry_seconds
    assert second > first
    assert [entry["ReceiptHandle"] for entry in change["Entries"]] == ["receipt-1", "receipt-2"]


def test_a_request_ecs_rejects_goes_to_the_dead_letter_queue_at_once_saying_why(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.error("InvalidParameterException", "subnet gone"), times=None)
    sqs = RecordingSqs()
    body = s3_event(s3_record("uploads/a.csv"))
    assert run(batch(sqs_record(body, "1")), settings, fake_ecs.client(), sqs) == []
    ((dead_body, reason),) = dead_letters(sqs)
    assert dead_body == body
    assert "InvalidParameterException: subnet gone" in reason


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "is not JSON"),
        ({"Records": "none"}, "not an S3 event with Records"),
        ({"Records": [{"eventSource": "aws:s3"}]}, "malformed record 0"),
    ],
)
def test_a_message_that_is_not_an_upload_goes_to_the_dead_letter_queue(
    body: Any, says: str, fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    sqs = RecordingSqs()
    assert run(batch(sqs_record(body, "1")), settings, fake_ecs.client(), sqs) == []
    ((_, reason),) = dead_letters(sqs)
    assert says in reason
    assert fake_ecs.calls == []


def test_an_upload_that_waited_13_days_goes_to_the_dead_letter_queue_before_sqs_drops_it(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:CPU"), times=None)
    sqs = RecordingSqs()
    event = batch(
        sqs_record(s3_event(s3_record("uploads/a.csv")), "1", parked_seconds_ago=MAX_WAIT_SECONDS)
    )
    assert run(event, settings, fake_ecs.client(), sqs) == []
    ((_, reason),) = dead_letters(sqs)
    assert reason.startswith("waited 13.0 days in the backlog")
    assert "RESOURCE:CPU" in reason


def test_an_upload_at_the_last_receive_sqs_allows_goes_to_the_dead_letter_queue(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:CPU"), times=None)
    sqs = RecordingSqs()
    event = batch(sqs_record(s3_event(s3_record("a.csv")), "1", receive_count=MAX_RECEIVES))
    assert run(event, settings, fake_ecs.client(), sqs) == []
    ((_, reason),) = dead_letters(sqs)
    assert reason.startswith(f"tried {MAX_RECEIVES} times")


def test_a_message_the_dead_letter_queue_refuses_is_kept_to_be_tried_again(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    sqs = RecordingSqs(refuse=True)
    assert run(batch(sqs_record("not json", "1")), settings, fake_ecs.client(), sqs) == ["1"]


def test_removals_and_results_in_a_parked_event_are_done_without_a_task(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    body = s3_event(
        s3_record("uploads/old.csv", event_name="ObjectRemoved:Delete"),
        s3_record("results/uploads/a.csv.json"),
    )
    sqs = RecordingSqs()
    assert run(batch(sqs_record(body, "1")), settings, fake_ecs.client(), sqs) == []
    assert fake_ecs.calls == []
    assert sqs.sent == []


def test_a_record_without_a_message_id_fails_the_whole_batch() -> None:
    record = sqs_record(s3_event(s3_record("uploads/a.csv")), "1")
    del record["messageId"]
    with pytest.raises(MalformedEventError, match="messageId"):
        process_event(batch(record), _settings(), Services(None))  # type: ignore[arg-type]


def _settings() -> RunnerSettings:
    from runner_settings import load_settings

    return load_settings(RUNNER_ENV)


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


def test_a_passing_fault_is_retried_sooner_than_a_turn_in_a_long_queue(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    fake_ecs.inject(Fault.failure("RESOURCE:CPU"))
    sqs = RecordingSqs()
    event = batch(sqs_record(s3_event(s3_record("uploads/a.csv")), "1", receive_count=40))
    assert run(event, settings, fake_ecs.client(), sqs) == ["1"]
    (change,) = sqs.visibility
    (entry,) = change["Entries"]
    assert entry["VisibilityTimeout"] <= settings.first_retry_seconds * 2 ** (
        PASSING_FAULT_ATTEMPTS - 1
    )


def test_a_big_batch_is_hidden_again_ten_messages_per_call_as_sqs_requires(
    fake_ecs: FakeEcs, settings: RunnerSettings
) -> None:
    quota = "You've reached the limit on the number of vCPUs you can run concurrently"
    fake_ecs.inject(Fault.failure(quota), times=None)
    sqs = RecordingSqs()
    event = batch(
        *(
            sqs_record(s3_event(s3_record(f"uploads/{n}.csv", sequencer=f"{n:02d}")), str(n))
            for n in range(25)
        )
    )
    assert len(run(event, settings, fake_ecs.client(), sqs)) == 25
    assert [len(call["Entries"]) for call in sqs.visibility] == [10, 10, 5]
