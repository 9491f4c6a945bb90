"""`jobctl status`: waiting jobs, tasks, the batch's progress and failures, from the job table
the runner writes, ECS and SQS."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobctl.__main__ import main
from jobctl.provision import Pipeline
from jobctl.status import CLEAR_SCREEN, Progress, Status, progress_bar, read_status, watch
from tests.jobctl.conftest import Deployment, deploy, jobctl_command


def status(**changes: object) -> Status:
    """A status as read, with `changes`."""
    values: dict[str, object] = {
        "waiting": 0,
        "oldest_wait": None,
        "parked": 0,
        "pending": 0,
        "running": 0,
        "cap": None,
        "account_limit": None,
        "batch": None,
        "failed_jobs": 0,
        "dead_letters": 0,
        "now": 10_000.0,
    }
    return Status(**(values | changes))  # type: ignore[arg-type]


def test_an_empty_deployment_reports_nothing_waiting_and_no_batch(deployment: Deployment) -> None:
    lines = read_status(deployment.outputs).lines()
    assert lines == [
        "backlog       nothing waits",
        "tasks         0 pending, 0 running",
        "batch         no upload recorded yet",
        "failed jobs   0 waiting for `python -m jobctl redrive`",
        "dead letters  0 waiting for `python -m jobctl redrive`",
    ]


def test_jobs_waiting_for_a_slot_and_the_oldest_wait_come_from_the_job_table(moto: None) -> None:
    capped = deploy(cap=2)
    for number in range(5):
        capped.upload(f"uploads/{number}.csv")
    first_waiting = capped.job("uploads/2.csv")
    now = first_waiting.recorded_at + 600
    found = read_status(capped.outputs, now=now)
    assert found.waiting == 3
    assert found.oldest_wait == pytest.approx(600, abs=1)
    assert (found.pending + found.running, found.cap) == (2, 2)
    lines = found.lines()
    assert (
        lines[0] == "backlog       3 jobs waiting for a task slot; the oldest has waited 10 min 0 s"
    )
    # moto calls its tasks pending or running as it likes; two of them, under the cap.
    assert lines[1] == f"tasks         {found.pending} pending, {found.running} running (cap 2)"


def test_the_batch_shows_done_of_total_its_rate_and_the_time_left(moto: None) -> None:
    capped = deploy(cap=2)
    for number in range(4):
        capped.upload(f"uploads/{number}.csv")
    capped.stop("uploads/0.csv", exit_code=0)  # the freed slot starts uploads/2.csv
    capped.stop("uploads/1.csv", exit_code=6)
    began = capped.store.stats().batch_since
    assert began is not None
    found = read_status(capped.outputs, now=began + 120)  # 2 done in 2 minutes
    assert found.batch == Progress(total=4, succeeded=1, failed=1, since=began)
    batch_line = found.lines()[2]
    assert batch_line == (
        "batch         2 of 4 done (1 succeeded, 1 failed), 1.0 per minute, about 2 min 0 s left"
    )
    assert found.failed_jobs == 1  # the exit-6 job's report, in the failed-jobs queue


def test_a_finished_batch_says_when_it_began_and_a_new_upload_starts_the_next(
    deployment: Deployment,
) -> None:
    deployment.upload("uploads/a.csv")
    deployment.stop("uploads/a.csv")
    first = deployment.store.stats().batch_since
    assert first is not None
    found = read_status(deployment.outputs, now=first + 90)
    assert (
        found.lines()[2]
        == "batch         1 of 1 done (1 succeeded, 0 failed); began 1 min 30 s ago"
    )
    time.sleep(0.01)
    deployment.upload("uploads/b.csv")
    again = read_status(deployment.outputs)
    assert again.batch is not None
    assert (again.batch.total, again.batch.done) == (1, 0)
    assert again.batch.since > first
    assert "none done yet, so no estimate of the time left" in again.lines()[2]


def test_a_terminal_gets_a_progress_bar() -> None:
    batch = Progress(total=40, succeeded=9, failed=1, since=9_940.0)
    lines = status(batch=batch, waiting=26, running=4).lines(bar=True)
    assert lines[3] == "              [##########------------------------------]  25 %"
    assert "[" not in "".join(status(batch=batch).lines(bar=False))


def test_the_progress_bar_is_full_when_everything_is_done() -> None:
    assert progress_bar(3, 3, width=10) == "[##########] 100 %"
    assert progress_bar(0, 0, width=10) == "[##########] 100 %"


def test_the_accounts_limit_is_shown_when_ecs_stated_it() -> None:
    line = status(cap=40, account_limit=25, running=25).lines()[1]
    assert (
        line
        == "tasks         0 pending, 25 running (cap 40; the account's limit 25, as ECS last said)"
    )


def test_uploads_the_job_table_could_not_take_are_counted_apart() -> None:
    lines = status(parked=2).lines()
    assert lines[1].startswith("              2 uploads parked in the backlog queue")


def test_watch_refreshes_the_given_number_of_times_sleeping_between(deployment: Deployment) -> None:
    lines: list[str] = []
    sleeps: list[float] = []
    code = watch(
        lambda: read_status(deployment.outputs),
        lines.append,
        where="the test",
        every=2.5,
        times=3,
        sleep=sleeps.append,
    )
    assert code == 0
    assert sleeps == [2.5, 2.5]
    headings = [line for line in lines if line.startswith("status of the test at ")]
    assert len(headings) == 3
    assert CLEAR_SCREEN not in "".join(lines)


def test_watch_on_a_terminal_redraws_the_screen_with_a_bar() -> None:
    lines: list[str] = []
    batch = Progress(total=4, succeeded=2, failed=0, since=9_900.0)
    watch(
        lambda: status(batch=batch),
        lines.append,
        where="t",
        times=2,
        terminal=True,
        sleep=lambda s: None,
    )
    redraws = [line for line in lines if line.startswith(CLEAR_SCREEN)]
    assert len(redraws) == 2
    assert sum("[####" in line for line in lines) == 2


def test_ctrl_c_ends_the_watch_cleanly() -> None:
    calls: list[int] = []

    def read() -> Status:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # Ctrl-C while it reads the second time
        return status()

    lines: list[str] = []
    assert watch(read, lines.append, where="t", sleep=lambda s: None) == 0
    assert lines[-1] == "stopped"


def test_the_command_reads_the_emulator_the_demo_prints(
    emulator_stacks: Callable[[str], Pipeline], emulator_env: str
) -> None:
    emulator_stacks("prod")
    done = jobctl_command(
        "status", "--stack", "prod", "--endpoint-url", emulator_env, "--watch", "0.1",
        "--times", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(f"status of the emulator at {emulator_env} at ") == 2
    assert "(cap 40)" in done.stdout
    assert "batch         " in done.stdout


def test_without_the_pulumi_cli_the_command_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here
    lines: list[str] = []
    monkeypatch.setattr("jobctl.__main__._say", lines.append)
    assert main(["status", "--stack", "dev"]) == 2
    assert "needs the Pulumi CLI" in lines[0]
    assert "--endpoint-url" in lines[0]


def test_a_stack_deployed_before_the_job_table_is_told_to_deploy_this_version(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = {name: value for name, value in deployment.outputs.items() if name != "jobTableName"}
    monkeypatch.setattr("jobctl.stack.deployed_outputs", lambda stack: outputs)
    lines: list[str] = []
    monkeypatch.setattr("jobctl.__main__._say", lines.append)
    assert main(["status", "--stack", "dev"]) == 2
    assert lines == [
        "error: the stack's outputs lack jobTableName: deploy this version of the program "
        "(`pulumi up`) first"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--watch", "0"], "error: --watch 0: give a number of seconds above 0"),
        (["--watch", "1", "--times", "0"], "error: --times 0: give 1 or more refreshes"),
    ],
)
def test_a_watch_that_would_not_refresh_is_refused(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr("jobctl.__main__._say", lines.append)
    assert main(["status", *argv]) == 2
    assert lines == [message]
