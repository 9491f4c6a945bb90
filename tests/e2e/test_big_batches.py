"""Big batches: 20,000 uploads within 10 minutes, absorbed with the backlog, on a virtual clock.

The proof runs the runner's real code (tests/fakes/simulated_pipeline.py) against a model of AWS
(tests/fakes/aws_model.py): RunTask's token bucket (burst 100, 20/s), an account limit of 100
tasks in flight answered as ECS answers it, tasks of 1 to 10 minutes, 5 % of uploads with passing
faults (throttling, capacity, answers lost after the task started), 2 % delivered twice (up to
5 minutes apart), SQS with visibility, receive counts, redrive and retention, the event source
mapping with its maximum concurrency and partial batch responses, and Lambda's asynchronous
retries for the direct path. Once without a cap and once with `maxConcurrentTasks` 60, which
keeps the batch waiting for 30 hours, longer than ECS remembers a clientToken.

Time is simulated: no sleeps and no wall clock, so the same seed gives the same figures on any
machine, idle or busy. The two runs are two tests, so `make test`'s two pytest workers run them
side by side.
"""

from __future__ import annotations

import os

import pytest

from tests.fakes.simulated_pipeline import Figures, Scenario, run_for_figures

SEED = int(os.environ.get("BIG_BATCH_SEED", "20261129"))
UPLOADS = 20_000
CAP = 60
BOUND = 1.15  # finished within this many times the best the limit allows

RUNS = {
    "no cap (account limit 100)": Scenario(uploads=UPLOADS, seed=SEED),
    f"maxConcurrentTasks {CAP}": Scenario(uploads=UPLOADS, seed=SEED, max_concurrent_tasks=CAP),
}


def table(rows: list[Figures]) -> str:
    lines = [
        "| run | uploads (deliveries) | tasks | one task each | dead letters | lost | "
        "peak in flight / limit | finished | best | ratio | Lambda invocations per upload | "
        "SQS requests per upload |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        lines.append(
            f"| {f.label} | {f.uploads:,} ({f.deliveries:,}) | {f.tasks:,} | "
            f"{f.with_one_task:,} | {f.dead_letters} | {f.lost + f.expired} | "
            f"{f.peak_in_flight} / {f.limit} | {f.finished_hours:.2f} h | {f.best_hours:.2f} h | "
            f"{f.ratio:.3f} | {f.invocations_per_upload:.2f} | {f.sqs_requests_per_upload:.2f} |"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("label", RUNS)
def test_a_burst_of_20000_uploads_ends_as_exactly_20000_tasks_within_the_limits(label: str) -> None:
    row = run_for_figures(RUNS[label], label)
    print(f"\nbig batches: seed {SEED}, virtual clock\n{table([row])}")
    print(f"  {row.label}: {row.events:,} events; faults given {row.faults}")

    assert row.tasks == UPLOADS, f"{row.label}: {row.tasks} tasks for {UPLOADS} uploads"
    assert row.with_one_task == UPLOADS, f"{row.label}: {row.duplicated} duplicated"
    assert (row.dead_letters, row.lost, row.expired) == (0, 0, 0), row
    assert row.peak_in_flight <= row.limit, f"{row.label}: {row.peak_in_flight} in flight"
    assert row.ratio <= BOUND, f"{row.label}: {row.ratio:.3f} times the best"
    assert row.faults.keys() == {"throttling", "capacity", "lost-answer"}
    # Waiting is the runner's answer, never an error: Lambda saw none from the backlog.
    assert row.lambda_errors == 0, f"{row.label}: {row.lambda_errors} failed invocations"
    if RUNS[label].max_concurrent_tasks:
        assert row.peak_in_flight == CAP, "the cap was never reached: it proved nothing"
        assert row.finished_hours > 24, "the capped batch must outlast ECS's 24 h token memory"
