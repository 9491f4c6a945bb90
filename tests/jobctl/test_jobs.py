"""`jobctl jobs`: the jobs recorded lately, newest first, from the records the runner wrote."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import job_record
import pytest

from jobctl.__main__ import main
from jobctl.jobs import UsageError, list_jobs, parse_since
from jobctl.provision import Pipeline
from tests.jobctl.conftest import BUCKET, Deployment, emulator_runner, jobctl_command


def listed(deployment: Deployment, **options: object) -> list[str]:
    lines: list[str] = []
    assert list_jobs(deployment.store, lines.append, **options) == 0  # type: ignore[arg-type]
    return lines


def keys(lines: list[str]) -> list[str]:
    """The upload column's keys, in the order the table lists them."""
    marker = f"s3://{BUCKET}/"
    return [line.split(marker)[1].split("  ")[0] for line in lines if marker in line]


def recorded_long_ago(deployment: Deployment, key: str, hours: float) -> None:
    """A job the runner recorded `hours` ago (its own code, its clock set back)."""
    job = job_record.new_job(
        bucket=BUCKET, key=key, job_id=uuid.uuid4().hex, now=time.time() - hours * 3600
    )
    deployment.store.create(job)


@pytest.fixture
def three_jobs(deployment: Deployment) -> Deployment:
    deployment.upload("uploads/a/one.csv")
    deployment.stop("uploads/a/one.csv", exit_code=0)
    time.sleep(0.01)  # recorded one after another
    deployment.upload("uploads/b/two.csv")
    deployment.stop("uploads/b/two.csv", exit_code=6)
    time.sleep(0.01)
    deployment.upload("uploads/a/three.csv")
    return deployment


def test_jobs_are_listed_newest_first_with_their_state_and_tries(three_jobs: Deployment) -> None:
    lines = listed(three_jobs)
    assert lines[0].split() == ["recorded", "(UTC)", "state", "tries", "upload"]
    assert keys(lines) == ["uploads/a/three.csv", "uploads/b/two.csv", "uploads/a/one.csv"]
    rows = dict(zip(keys(lines), lines[1:4], strict=True))
    assert "  starting  " in rows["uploads/a/three.csv"]
    assert "  failed  " in rows["uploads/b/two.csv"]
    assert "job-failure, exit 6" in rows["uploads/b/two.csv"]
    assert "  succeeded  " in rows["uploads/a/one.csv"]
    assert lines[-2] == "3 jobs recorded in the last 24h, newest first"


def test_only_failed_jobs_with_state_failed(three_jobs: Deployment) -> None:
    lines = listed(three_jobs, state="failed")
    assert keys(lines) == ["uploads/b/two.csv"]
    assert lines[-2] == "1 job recorded in the last 24h (state failed), newest first"


def test_only_keys_under_the_prefix_with_prefix(three_jobs: Deployment) -> None:
    assert keys(listed(three_jobs, prefix="uploads/a/")) == [
        "uploads/a/three.csv",
        "uploads/a/one.csv",
    ]


def test_jobs_older_than_since_are_left_out(deployment: Deployment) -> None:
    recorded_long_ago(deployment, "uploads/old.csv", hours=3)
    deployment.upload("uploads/new.csv")
    assert keys(listed(deployment, since="2h")) == ["uploads/new.csv"]
    assert keys(listed(deployment, since="4h")) == ["uploads/new.csv", "uploads/old.csv"]


def test_a_limit_shows_the_newest_and_says_more_match(three_jobs: Deployment) -> None:
    lines = listed(three_jobs, limit=2)
    assert keys(lines) == ["uploads/a/three.csv", "uploads/b/two.csv"]
    assert "more match: raise --limit (now 2) or narrow --since" in lines[-2]


def test_nothing_recorded_is_an_answer_too(deployment: Deployment) -> None:
    assert listed(deployment, state="failed") == ["no jobs recorded in the last 24h (state failed)"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("1h30m", 5400)]
)
def test_since_reads_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2 hours"], "--since '2 hours' is not a duration: write a number and a unit"),
        (["--since", "0h"], "--since '0h' is no time at all"),
        (
            ["--state", "done"],
            "--state 'done' is not a job state; choose from waiting, starting, running, "
            "succeeded, failed",
        ),
    ],
)
def test_a_bad_option_is_named_before_anything_is_read(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr("jobctl.__main__._say", lines.append)
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI: reading would fail otherwise
    assert main(["jobs", "--stack", "dev", *argv]) == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {message}")


def test_a_limit_below_one_is_refused(deployment: Deployment) -> None:
    with pytest.raises(UsageError, match="--limit 0: give 1 or more"):
        list_jobs(deployment.store, print, limit=0)


def test_the_command_lists_the_jobs_in_the_emulator_and_how_to_show_one(
    emulator_stacks: Callable[[str], Pipeline], emulator_env: str
) -> None:
    dev = emulator_runner(emulator_stacks("dev"))
    key = f"uploads/listed {uuid.uuid4().hex[:6]}.csv"
    dev.upload(key)
    dev.stop(key, exit_code=6)
    done = jobctl_command(
        "jobs", "--endpoint-url", emulator_env, "--state", "failed", "--since", "10m"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if key in line]
    assert "  failed  " in row
    assert "job-failure, exit 6" in row
    assert done.stdout.splitlines()[-1] == (
        f"what happened to one: python -m jobctl show --stack dev --endpoint-url {emulator_env} "
        "s3://<bucket>/<key>"
    )
