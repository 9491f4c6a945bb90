"""Every upload is a job: retried by cause, timed out for real, answerable — on a virtual clock.

20,000 uploads on FARGATE_SPOT under an account limit of 100, as tests/e2e/test_big_batches.py
runs them, and besides: 3 % of the uploads have their task interrupted by Spot at a random
moment (a tenth of those twice), 2 % fail to start once (an image pull that timed out), 2 % exit
1 every time, 0.5 % hang until stopped. taskTimeoutMinutes is 15 (tasks run 1 to 10 minutes),
taskMaxAttempts 3, no exit code is listed for retries.
"""

from __future__ import annotations

import os
import random
from collections import Counter

from tests.fakes.simulated_pipeline import (
    Outcome,
    Scenario,
    fewer_collections,
    figures,
    run_scenario,
    succeeded,
    tally,
)

SEED = int(os.environ.get("BIG_BATCH_SEED", "20261206"))
TIMEOUT_MINUTES = 15
MAX_ATTEMPTS = 3
SCENARIO = Scenario(
    uploads=20_000,
    seed=SEED,
    capacity_provider="FARGATE_SPOT",
    spot_rate=0.03,
    pull_failure_rate=0.02,
    exit_1_rate=0.02,
    hang_rate=0.005,
    task_timeout_minutes=TIMEOUT_MINUTES,
    max_attempts=MAX_ATTEMPTS,
)


def kinds(outcome: Outcome) -> dict[str, list[tuple[str, str, str | None]]]:
    """Uploads by what their first attempt was planned to do."""
    found: dict[str, list[tuple[str, str, str | None]]] = {}
    for upload in outcome.uploads:
        kind = upload.behaviours[0].kind if upload.behaviours else "ok"
        found.setdefault(kind, []).append(upload.identity)
    return found


def test_twenty_thousand_jobs_are_retried_by_cause_timed_out_and_reported_once() -> None:
    outcome = run_scenario(SCENARIO)
    with fewer_collections():  # every record read back, beside the run's millions of objects
        row = figures(outcome, "20,000 jobs on FARGATE_SPOT")
        counted = tally(outcome)
        tasks = outcome.tasks_by_upload
        jobs = outcome.jobs()
        by_kind = kinds(outcome)
        dead, failed = outcome.reports_by_upload()
    print(
        f"\njob retries: seed {SEED}, virtual clock: {row.uploads:,} uploads, {row.tasks:,} "
        f"tasks, finished {row.finished_hours:.2f} h (best {row.best_hours:.2f} h), "
        f"{row.failed_jobs} failed jobs, {row.dead_letters} dead letters; planned "
        f"{ {kind: len(uploads) for kind, uploads in by_kind.items()} }"
    )

    # Nothing lost, nothing twice, never two attempts of one upload at once.
    assert (counted.lost, counted.duplicated, counted.overlapping) == ([], [], [])
    assert row.dead_letters == 0  # nothing failed to start for good or waited too long
    for identity, job in jobs.items():
        assert job.attempt_count <= MAX_ATTEMPTS, identity

    # Interrupted and failed-to-start uploads end with one successful task, on their retries.
    causes: Counter[str] = Counter()
    for kind in ("spot", "pull-failure"):
        for identity in by_kind[kind]:
            ran = tasks[identity]
            assert [succeeded(task) for task in ran].count(True) == 1, identity
            assert succeeded(ran[-1])
            assert 2 <= len(ran) <= MAX_ATTEMPTS
            assert failed[identity] == 0
            causes.update(attempt.cause or "" for attempt in jobs[identity].attempts[:-1])
    assert causes.keys() == {"spot-interruption", "image-pull"}

    # Job failures are not retried; each is in the failed-jobs queue once, with its history.
    for identity in by_kind["exit-1"]:
        (task,) = tasks[identity]
        assert (task.stop_code, task.exit_code) == ("EssentialContainerExited", 1)
        assert failed[identity] == 1
        job = jobs[identity]
        assert (job.state, job.reported, job.attempts[-1].cause) == ("failed", True, "job-failure")

    # Hanging tasks are stopped within a minute of their limit, as timeouts, reported once.
    overdue = []
    for identity in by_kind["hang"]:
        (task,) = tasks[identity]
        assert task.started_at is not None
        assert task.stop_asked_at is not None
        overdue.append(task.stop_asked_at - task.started_at - TIMEOUT_MINUTES * 60)
        assert task.stop_code == "UserInitiated"
        assert failed[identity] == 1
        assert jobs[identity].attempts[-1].cause == "timeout"
    assert min(overdue) > 0
    assert max(overdue) <= 60, f"a hung task ran {max(overdue):.0f} s past its limit"
    print(f"  hung tasks stopped {min(overdue):.0f} to {max(overdue):.0f} s after their limit")

    # The rest: one task each, exit 0.
    for identity in by_kind["ok"]:
        assert [succeeded(task) for task in tasks[identity]] == [True], identity
    assert row.failed_jobs == len(by_kind["exit-1"]) + len(by_kind["hang"])
    assert sum(dead.values()) == 0

    # What `jobctl show` prints of a sample of uploads is the model's truth.
    from jobctl.show import timeline

    rng = random.Random(SEED)
    sample = [rng.choice(by_kind[kind]) for kind in by_kind for _ in range(3)]
    for identity in sample:
        job = jobs[identity]
        text = "\n".join(timeline(job, log_group="/jobs/job"))
        for task in tasks[identity]:
            assert task.arn.rsplit("/", 1)[-1] in text, (identity, text)
            assert (task.stop_code or "") in text
            if task.exit_code is not None:
                assert f"exit {task.exit_code}" in text
            assert task.provider in text
        assert job.state in text
