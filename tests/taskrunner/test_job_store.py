"""The job table: every write conditional, slots exact, indexes as the scheduler needs them.

Each test runs twice: against moto's DynamoDB and against the simulation's model of it
(tests/fakes/dynamodb_model.py), so the proofs on the virtual clock rest on the same behaviour
as a real implementation of the expressions the runner writes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import job_record
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from job_record import STATES, Attempt, Job, Next, Stop
from job_store import (
    SHARDS,
    SWEEP_INDEX,
    WAITING_INDEX,
    Conflict,
    Full,
    JobStore,
    changes,
    decode,
    encode,
    job_key,
)
from moto import mock_aws

from tests.fakes.aws_model import BotocoreRetries, Latency, SimDynamoClient
from tests.fakes.dynamodb_model import DynamoModel, Index, Table, parse_update
from tests.fakes.dynamodb_model import _Context as Context
from tests.fakes.job_table import create_job_table
from tests.fakes.virtual_clock import Simulation
from tests.taskrunner.conftest import MOTO_CREDENTIALS

TABLE = "jobs-state"
ARN = "arn:aws:ecs:us-east-1:123456789012:task/jobs/0123456789abcdef"


@pytest.fixture(params=["moto", "model"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    if request.param == "moto":
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in MOTO_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        with mock_aws():
            client = boto3.client("dynamodb")
            create_job_table(client, TABLE)
            yield JobStore(client, TABLE, record_days=30, sleep=lambda _: None)
        return
    from job_store import INDEX_PROJECTIONS, INDEXES

    model = DynamoModel(lambda: 0.0)
    model.create(
        Table(
            TABLE,
            indexes={
                name: Index(name, keys[0], keys[1], INDEX_PROJECTIONS[name])
                for name, keys in INDEXES.items()
            },
        )
    )
    retries = BotocoreRetries(Simulation(), random.Random(0), max_attempts=1, read_timeout=1.0)
    simulated: Any = SimDynamoClient(model, retries, Latency(dynamodb=0.0))
    yield JobStore(simulated, TABLE, record_days=30, sleep=lambda _: None)


def job(number: int = 0, *, now: float = 1000.0, key: str = "a.csv") -> Job:
    job_id = hashlib.sha256(str(number).encode()).hexdigest()[:32]  # as upload_events makes
    return job_record.new_job(
        bucket="uploads", key=key, job_id=job_id, now=now, version_id=f"v{number}"
    )


def claim(store: JobStore, waiting: Job, *, limit: int | None = None, now: float = 1001.0) -> Job:
    return store.apply(
        waiting,
        job_record.claim(waiting, now=now, default_provider="FARGATE"),
        limit=limit,
    )


def finish(store: JobStore, running: Job, *, now: float = 1100.0) -> Job:
    stop = Stop(ARN, "EssentialContainerExited", "exited", 0, None, now - 50, now)
    return store.apply(
        running,
        job_record.stopped(running, 1, stop, Next("succeeded", "succeeded", "ok"), now=now),
    )


def test_a_job_reads_back_as_it_was_written(store: JobStore) -> None:
    written, created = store.create(job(1))
    assert created
    assert store.get("uploads", "a.csv", written.job_id) == written
    claimed = claim(store, written)
    started = store.apply(claimed, job_record.task_started(claimed, 1, ARN))
    assert store.reread(started) == started
    assert decode(encode(started, record_days=30)) == started


def test_a_second_delivery_finds_the_first_ones_record(store: JobStore) -> None:
    first, _ = store.create(job(1, now=1000.0))
    again, created = store.create(job(1, now=2000.0))
    assert not created
    assert again == first


def test_a_write_from_a_stale_read_is_refused(store: JobStore) -> None:
    waiting, _ = store.create(job(1))
    claim(store, waiting)
    with pytest.raises(Conflict):
        claim(store, waiting)  # the same read, a second time: another invocation's


def test_a_claim_takes_a_slot_and_the_stop_frees_it(store: JobStore) -> None:
    waiting, _ = store.create(job(1))
    claimed = claim(store, waiting)
    assert store.slots().active == 1
    finish(store, claimed)
    assert store.slots().active == 0


def test_no_claim_goes_beyond_the_limit_and_the_refused_job_stays_waiting(store: JobStore) -> None:
    jobs = [store.create(job(n))[0] for n in range(3)]
    claim(store, jobs[0], limit=2)
    claim(store, jobs[1], limit=2)
    with pytest.raises(Full):
        claim(store, jobs[2], limit=2)
    assert store.slots().active == 2
    assert store.reread(jobs[2]) == jobs[2]


def test_a_duplicate_stop_cannot_free_a_slot_twice(store: JobStore) -> None:
    a, _ = store.create(job(1))
    b, _ = store.create(job(2))
    running_a = claim(store, a)
    claim(store, b)
    finish(store, running_a)
    with pytest.raises(Conflict):
        finish(store, running_a)  # the same stop, delivered again
    assert store.slots().active == 1


def test_a_quota_refusal_notes_the_slots_still_taken_as_the_accounts_limit(store: JobStore) -> None:
    jobs = [store.create(job(n))[0] for n in range(3)]
    for waiting in jobs[:2]:
        claim(store, waiting)
    refused = claim(store, jobs[2])
    back = job_record.not_started(refused, 1, now=1002.0, reason="reached the limit")
    store.apply(refused, back, account_limit_seen_at=1002.0)
    slots = store.slots()
    assert (slots.active, slots.account_limit, slots.limit_seen_at) == (2, 2, 1002.0)


def test_waiting_jobs_are_listed_oldest_first_from_every_shard(store: JobStore) -> None:
    created = [store.create(job(n, now=1000.0 + (17 * n) % 40))[0] for n in range(40)]
    assert len({int(j.job_id[:8], 16) % SHARDS for j in created}) > 1  # spread over shards
    listed = store.oldest_waiting(ready_by=2000.0, wanted=10)
    assert [j.ready_at for j in listed] == sorted(j.ready_at or 0 for j in created)[:10]


def test_a_claimed_job_and_a_retry_in_its_delay_are_not_listed_as_waiting(
    store: JobStore,
) -> None:
    a, _ = store.create(job(1, now=1000.0))
    b, _ = store.create(job(2, now=1001.0))
    c, _ = store.create(job(3, now=1002.0))
    claim(store, a)
    delayed = store.apply(b, replace(b, retry_at=5000.0))
    assert [j.job_id for j in store.oldest_waiting(ready_by=6000.0, wanted=10)] == [c.job_id]
    assert store.due_retries(by=4999.0, wanted=10) == []
    (due,) = store.due_retries(by=5000.0, wanted=10)
    assert due == delayed
    # Its delay over, it is back in its place: before the job recorded after it.
    store.apply(due, replace(due, retry_at=None))
    assert [j.job_id for j in store.oldest_waiting(ready_by=6000.0, wanted=10)] == [
        b.job_id,
        c.job_id,
    ]


def test_the_sweep_sees_tasks_under_way_and_failures_not_yet_reported(store: JobStore) -> None:
    a, _ = store.create(job(1))
    b, _ = store.create(job(2))
    c, _ = store.create(job(3))
    running = claim(store, a)
    done = finish(store, claim(store, b))
    refused = claim(store, c)
    failed = store.apply(refused, job_record.failed(refused, now=1003.0, reason="rejected"))
    assert {j.job_id for j in store.needing_sweep()} == {running.job_id, failed.job_id}
    store.apply(failed, job_record.reported(failed))
    assert {j.job_id for j in store.needing_sweep()} == {running.job_id}
    assert done.state == "succeeded"


def test_a_finished_job_expires_after_the_days_records_are_kept(store: JobStore) -> None:
    a, _ = store.create(job(1))
    done = finish(store, claim(store, a), now=10_000.0)
    item = encode(done, record_days=30)
    assert int(item["expiresAt"]["N"]) == 10_000 + 30 * 86400
    assert "expiresAt" not in encode(a, record_days=30)  # waiting: never expires


def test_every_upload_of_one_key_is_found_by_the_key(store: JobStore) -> None:
    first, _ = store.create(job(1, now=1000.0, key="report.csv"))
    second, _ = store.create(job(2, now=2000.0, key="report.csv"))
    store.create(job(3, key="other.csv"))
    assert [j.job_id for j in store.jobs_of("uploads", "report.csv")] == [
        first.job_id,
        second.job_id,
    ]


def test_recent_jobs_come_newest_first_within_the_window(store: JobStore) -> None:
    for n, at in enumerate((1000.0, 5000.0, 9000.0, 20_000.0)):
        store.create(job(n, now=at, key=f"k{n}"))
    found = [j.key for j in store.recent(since=4000.0, until=10_000.0)]
    assert found == ["k2", "k1"]


def test_totals_add_up_and_a_batch_starts_from_them(store: JobStore) -> None:
    store.count(recorded=3)
    totals = store.count(succeeded=1, failed=1)
    assert totals is not None
    assert (totals.recorded, totals.succeeded, totals.failed, totals.in_progress) == (3, 1, 1, 1)
    store.start_batch(totals, 1234.0)
    read = store.stats()
    assert (read.batch_since, read.batch_recorded, read.batch_succeeded) == (1234.0, 3, 1)


def test_the_index_keys_follow_the_state(store: JobStore) -> None:
    a, _ = store.create(job(1))
    assert "waitShard" in encode(a, record_days=30)
    claimed = claim(store, a)
    item = encode(claimed, record_days=30)
    assert "waitShard" not in item
    assert item["sweepShard"]["S"].startswith(SWEEP_INDEX[0])
    assert job_key("b", "k", "1") != job_key("b", "k", "2")
    assert WAITING_INDEX != SWEEP_INDEX


def test_a_record_in_any_valid_typing_reads_as_the_codec_would_write_it() -> None:
    # The runner writes counts as whole numbers and leaves unknown values out; another writer
    # (a console edit, an older runner) may write "3.0" or an explicit NULL.
    started = job_record.task_started(
        job_record.claim(job(1), now=100.0, default_provider="FARGATE"), 1, ARN
    )
    item = encode(started, record_days=30)
    item["version"] = {"N": f"{started.version}.0"}
    item["attemptCount"] = {"N": "1.0"}
    item["reason"] = {"NULL": True}
    item["reported"] = {"BOOL": True}
    attempt = item["attempts"]["L"][0]["M"]
    attempt["exitCode"] = {"NULL": True}
    attempt["claimedAt"] = {"N": "100"}
    assert decode(item) == started
    assert isinstance(decode(item).current.claimed_at, float)  # type: ignore[union-attr]


# --- a write's expression: only what changed, and exactly the item `after` encodes to ----------

times = st.one_of(st.none(), st.floats(0, 2e9, allow_nan=False), st.integers(0, 2_000_000_000))
texts = st.one_of(st.none(), st.text(max_size=8))
attempts = st.builds(
    Attempt,
    number=st.integers(1, 5),
    claim=st.integers(1, 9),
    provider=st.sampled_from(["FARGATE", "FARGATE_SPOT"]),
    claimed_at=st.floats(0, 2e9, allow_nan=False),
    task_arn=st.one_of(st.none(), st.just(ARN)),
    started_at=times,
    stopped_at=times,
    stop_code=texts,
    exit_code=st.one_of(st.none(), st.integers(0, 255)),
    cause=texts,
)
# Each field's new value: a fresh one, or None where the field may be None.
changed_fields = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(STATES),
        "recorded_at": st.floats(0, 2e9, allow_nan=False),
        "ready_at": times,
        "retry_at": times,
        "version_id": texts,
        "size": st.one_of(st.none(), st.integers(0, 2**40)),
        "attempts": st.lists(attempts, max_size=3).map(tuple),
        "attempt_count": st.integers(0, 5),
        "claims": st.integers(0, 9),
        "next_provider": texts,
        "active_since": times,
        "finished_at": times,
        "reason": texts,
        "reported": st.booleans(),
        "report_taken_at": times,
        "redrives": st.integers(0, 3),
        "last_redrive_of": texts,
    },
)


def applied(item: dict[str, Any], update: tuple[str, dict[str, str], dict[str, Any]]) -> Any:
    expression, names, values = update
    written = dict(item)
    parse_update(expression)(written, Context(names, values))
    return written


@settings(max_examples=300, deadline=None)
@given(first=changed_fields, second=changed_fields, keep_attempts=st.booleans())
def test_a_write_turns_the_item_read_into_exactly_the_item_of_the_new_record(
    first: dict[str, Any], second: dict[str, Any], keep_attempts: bool
) -> None:
    before = replace(job(1), **first)
    if keep_attempts and before.attempts:
        second = {**second, "attempts": (*before.attempts[:-1], replace(before.attempts[-1]))}
    after = job_record.written_over(before, replace(before, **second))  # as `apply` writes it
    update = changes(before, after, record_days=30)
    assert applied(encode(before, record_days=30), update) == encode(after, record_days=30)


def test_a_write_names_only_the_attributes_its_change_touched() -> None:
    claimed = job_record.claim(job(1), now=100.0, default_provider="FARGATE")
    read = decode(encode(job_record.task_started(claimed, 1, ARN), record_days=30))
    running = job_record.written_over(
        read, job_record.running(read, 1, started_at=150.0, task_arn=None)
    )
    _, names, _ = changes(read, running, record_days=30)
    assert sorted(names.values()) == ["attempts", "state", "version"]
