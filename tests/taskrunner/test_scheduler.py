"""Filling free slots: how many, which jobs first, and what each answer of ECS stops."""

from __future__ import annotations

from dataclasses import replace

from job_record import Job, claim, new_job
from job_store import Slots
from scheduler import (
    ACCOUNT_LIMIT_MEMORY_SECONDS,
    MAX_STARTS_PER_FILL,
    TIME_RESERVE_MS,
    Scheduler,
    candidates,
    free_slots,
    slot_limit,
)

from tests.fakes.fake_ecs import Fault
from tests.taskrunner.conftest import World, s3_record

QUOTA = "You've reached the limit on the number of vCPUs you can run concurrently"
CAPACITY = "Capacity is unavailable at this time. Please try again later"


def test_the_slots_are_the_cap_and_the_accounts_limit_as_ecs_last_stated_it() -> None:
    assert slot_limit(0, Slots(), 0.0) == (None, False)
    assert slot_limit(40, Slots(), 0.0) == (40, False)
    seen = Slots(active=30, account_limit=25, limit_seen_at=1000.0)
    assert slot_limit(40, seen, 1000.0 + 10) == (25, False)
    # Remembered too long: one more is tried (a probe), not as many as every fill wants.
    assert slot_limit(0, seen, 1000.0 + ACCOUNT_LIMIT_MEMORY_SECONDS) == (26, True)
    assert slot_limit(20, seen, 1000.0 + ACCOUNT_LIMIT_MEMORY_SECONDS) == (20, False)
    assert free_slots(25, seen) == 0
    assert free_slots(40, seen) == 10
    assert free_slots(None, seen) == MAX_STARTS_PER_FILL


def test_candidates_are_the_oldest_ready_jobs_each_once_at_its_latest_version() -> None:
    def job(n: int, at: float) -> Job:
        return new_job(bucket="b", key=f"k{n}", job_id=f"{n:032x}", now=at)

    old, new, late = job(1, 100.0), job(2, 200.0), job(3, 900.0)
    taken = claim(job(4, 50.0), now=60.0, default_provider="FARGATE")
    stale = old
    fresh = replace(old, version=3)
    found = candidates([new, stale, late, taken], [fresh], ready_by=500.0)
    assert [(j.key, j.version) for j in found] == [("k1", 3), ("k2", 0)]


def test_a_quota_refusal_stops_the_fill_and_no_fill_asks_again_for_a_while(world: World) -> None:
    world.ecs.inject(
        Fault.failure(QUOTA), times=None, when=lambda call: call.s3_key != "uploads/first.csv"
    )
    world.upload(s3_record("uploads/first.csv"))
    summary = world.upload(s3_record("uploads/second.csv", sequencer="02"))
    assert summary["started"] == {}
    assert world.store.slots().account_limit == 1  # the one of ours running when ECS said no
    calls = len(world.ecs.calls)
    world.upload(s3_record("uploads/third.csv", sequencer="03"))
    world.sweep()
    assert len(world.ecs.calls) == calls  # the account is full: nobody asks
    world.later(ACCOUNT_LIMIT_MEMORY_SECONDS)
    world.sweep()
    assert len(world.ecs.calls) == calls + 1  # then one asks, and learns it again
    assert world.store.slots().account_limit == 1


def test_a_start_beyond_the_stated_limit_raises_the_limit_by_a_tenth(
    world: World,
) -> None:
    world.ecs.inject(Fault.failure(QUOTA), when=lambda call: call.s3_key == "uploads/second.csv")
    world.upload(s3_record("uploads/first.csv"))
    world.upload(s3_record("uploads/second.csv", sequencer="02"))  # refused: the limit is 1
    for number in range(3):
        world.upload(s3_record(f"uploads/more-{number}.csv", sequencer=f"1{number}"))
    assert len(world.ecs.started) == 1
    world.later(ACCOUNT_LIMIT_MEMORY_SECONDS)  # the quota was raised meanwhile
    world.sweep()  # one probe starts second.csv: the limit no longer holds
    assert world.store.slots().account_limit == 2
    world.later(ACCOUNT_LIMIT_MEMORY_SECONDS)
    world.sweep()
    assert len(world.ecs.started) == 3  # a tenth more (at least one) each time it holds


def test_after_a_capacity_shortage_the_next_job_is_tried_then_the_fill_stops(world: World) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    capped.upload(s3_record("uploads/first.csv"))
    for number in range(4):
        capped.upload(s3_record(f"uploads/wait-{number}.csv", sequencer=f"1{number}"))
    capped.ecs.inject(Fault.failure(CAPACITY), times=5)
    (arn,) = capped.ecs.started.values()
    capped.with_settings(max_concurrent_tasks=5).stopped(arn)
    waiting = [capped.job(f"uploads/wait-{n}.csv") for n in range(4)]
    assert [job.state for job in waiting] == ["waiting"] * 4  # every one keeps its place
    assert len(capped.ecs.calls) == 1 + 2  # two refusals in a row, then the fill gave up


def test_a_job_ecs_rejects_fails_into_the_dead_letter_queue_and_the_fill_goes_on(
    world: World,
) -> None:
    world.ecs.inject(
        Fault.error("AccessDeniedException", "not authorized to perform: ecs:RunTask"),
        times=None,
        when=lambda call: call.s3_key == "uploads/bad.csv",
    )
    summary = world.upload(
        s3_record("uploads/bad.csv"), s3_record("uploads/good.csv", sequencer="02")
    )
    assert list(summary["started"]) == ["uploads/good.csv"]
    assert world.job("uploads/bad.csv").state == "failed"
    (message,) = world.messages("DEAD_LETTER_QUEUE_URL")
    assert "AccessDeniedException" in message["MessageAttributes"]["reason"]["StringValue"]
    assert world.store.slots().active == 1


def test_no_job_is_started_with_too_little_of_the_invocations_time_left(world: World) -> None:
    capped = world.with_settings(max_concurrent_tasks=1)
    capped.upload(s3_record("uploads/first.csv"))
    capped.upload(s3_record("uploads/second.csv", sequencer="02"))
    roomier = capped.with_settings(max_concurrent_tasks=2)
    report = Scheduler(
        roomier.store, roomier.settings, roomier.services, remaining_ms=lambda: TIME_RESERVE_MS - 1
    ).fill()
    assert report.started == {}
    assert "left" in report.stopped_because
    assert roomier.job("uploads/second.csv").state == "waiting"
