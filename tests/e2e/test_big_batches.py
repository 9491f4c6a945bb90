"""Big batches on a virtual clock: every upload one task, slots refilled by events, not timers.

The proof runs the runner's real code (tests/fakes/simulated_pipeline.py) against a model of AWS
(tests/fakes/aws_model.py): RunTask's token bucket (burst 100, 20/s), an account limit of 100
tasks PENDING or RUNNING answered as ECS answers it, Fargate's start time (30-90 s, counted in
the limit and in the best possible), tasks of 1 to 10 minutes, ECS task state change events
through EventBridge (1-10 s late, 1 % twice, so not in order), the sweep every minute, 5 % of
uploads with passing faults (throttling, capacity, answers lost after the task started), 2 %
delivered twice by S3, DynamoDB with its indexes lagging and its transactions conflicting, and
Lambda's asynchronous retries.

Time is simulated: no sleeps and no wall clock, so the same seed gives the same figures on any
machine, idle or busy. Each run is its own test, so `make test`'s two pytest workers share them.
The 200,000-upload run takes minutes: it is marked `slow` and left out of `make test`
(`venv/bin/python -m pytest -m slow -rA tests/e2e/test_big_batches.py` runs it).
"""

from __future__ import annotations

import os

import pytest

from tests.fakes.simulated_pipeline import Figures, Scenario, run_for_figures

SEED = int(os.environ.get("BIG_BATCH_SEED", "20261206"))
BOUND = 1.05  # finished within this many times the best the limits allow
OUTAGE_BOUND = 1.3
MOST_RUN_TASK_CALLS = 1.5  # per upload
MOST_INVOCATIONS = 3.0  # per upload
CAP, RAISED_CAP = 60, 80
# Halfway through the capped run: 20,000 tasks of 60-690 s at 60 at once take about 36 h.
RAISE_AT = 18 * 3600.0
OUTAGE = (20 * 60.0, 50 * 60.0)  # EventBridge delivers nothing for 30 minutes

RUNS = {
    "200 uploads": Scenario(uploads=200, seed=SEED),
    "2,000 uploads": Scenario(uploads=2_000, seed=SEED),
    "20,000 uploads": Scenario(uploads=20_000, seed=SEED),
    f"20,000, cap {CAP} raised to {RAISED_CAP}": Scenario(
        uploads=20_000,
        seed=SEED,
        max_concurrent_tasks=CAP,
        raise_cap_to=RAISED_CAP,
        raise_cap_at=RAISE_AT,
    ),
    "2,000, no events for 30 min": Scenario(uploads=2_000, seed=SEED, outage=OUTAGE),
}
SLOW_RUNS = {"200,000 uploads": Scenario(uploads=200_000, seed=SEED, horizon=20 * 24 * 3600.0)}


def table(rows: list[Figures]) -> str:
    lines = [
        "| run | uploads (deliveries) | tasks | one task each | dead letters | lost | "
        "peak in flight / limit | finished | best | ratio | RunTask calls per upload | "
        "Lambda invocations per upload | out of order > 1 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        limit = f"{f.limit}→{f.raised_to}" if f.raised_to else str(f.limit)
        lines.append(
            f"| {f.label} | {f.uploads:,} ({f.deliveries:,}) | {f.tasks:,} | "
            f"{f.with_one_success:,} | {f.dead_letters} | {f.lost + f.expired} | "
            f"{f.peak_in_flight} / {limit} | {f.finished_hours:.2f} h | {f.best_hours:.2f} h | "
            f"{f.ratio:.3f} | {f.run_task_per_upload:.2f} | {f.invocations_per_upload:.2f} | "
            f"{f.order_inversions} |"
        )
    return "\n".join(lines)


def costs(row: Figures) -> str:
    dollars = row.dollars_per_thousand()
    listed = ", ".join(f"{name} ${value:.4f}" for name, value in dollars.items())
    return f"per 1,000 uploads: {listed} (total ${sum(dollars.values()):.4f})"


def check(label: str, row: Figures, scenario: Scenario) -> None:
    print(f"\nbig batches: seed {SEED}, virtual clock\n{table([row])}")
    print(f"  {row.label}: {row.events:,} events; faults given {row.faults}; {costs(row)}")
    print(f"  invocations {row.invocations}; DynamoDB calls {row.dynamodb_calls}")
    if scenario.raise_cap_to:
        used = row.raised_cap_used_after
        print(
            f"  cap {CAP} until {RAISE_AT / 3600:.0f} h: peak {row.peak_before_raise}; then "
            f"{RAISED_CAP}: peak {row.peak_after_raise}, first used in full "
            + ("never" if used is None else f"{used:.1f} s after the raise")
        )

    assert row.tasks == scenario.uploads, f"{label}: {row.tasks} tasks for {scenario.uploads}"
    assert row.with_one_success == scenario.uploads, f"{label}: {row.duplicated} duplicated"
    assert (row.dead_letters, row.failed_jobs, row.lost, row.expired) == (0, 0, 0, 0), row
    assert row.overlapping == 0
    assert row.order_inversions == 0, f"{label}: started out of order by more than a minute"
    assert row.peak_in_flight <= max(scenario.account_limit, 1)
    assert row.run_task_per_upload <= MOST_RUN_TASK_CALLS, row.run_task_per_upload
    assert row.invocations_per_upload <= MOST_INVOCATIONS, row.invocations_per_upload
    if scenario.uploads >= 2_000:
        assert row.faults.keys() == {"throttling", "capacity", "lost-answer"}
    if scenario.outage:
        assert row.events_dropped > 0, "the outage dropped no event: it proved nothing"
        assert row.ratio <= OUTAGE_BOUND, f"{label}: {row.ratio:.3f} times the best"
    else:
        assert row.ratio <= BOUND, f"{label}: {row.ratio:.3f} times the best"
    if scenario.max_concurrent_tasks:
        assert row.peak_before_raise == CAP, "the cap was never reached: it proved nothing"
        assert row.peak_after_raise == RAISED_CAP
        assert row.raised_cap_used_after is not None
        assert row.raised_cap_used_after <= 120, "the raised cap took over 2 minutes to be used"


@pytest.mark.parametrize("label", RUNS)
def test_every_upload_ends_as_one_task_and_slots_are_refilled_as_tasks_stop(label: str) -> None:
    check(label, run_for_figures(RUNS[label], label), RUNS[label])


@pytest.mark.slow
@pytest.mark.parametrize("label", SLOW_RUNS)
def test_two_hundred_thousand_uploads_wait_in_order_and_end_as_one_task_each(label: str) -> None:
    check(label, run_for_figures(SLOW_RUNS[label], label), SLOW_RUNS[label])
