"""`python -m task` as the container runs it: environment in, exit code and JSON lines out."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from task.exit_codes import ExitCode
from tests.fakes.stalling_s3 import Stall, stalling_s3
from tests.task.conftest import SMALL_PART, log_lines, read_result, result_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # seconds; a hung child fails the test instead of the suite


def task_env(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "S3_VERSION_ID"}
    for name in ("S3_BUCKET", "S3_KEY", "RESULT_BUCKET", "RESULT_PREFIX", "TASK_PROCESSOR"):
        env.pop(name, None)
    env.update(values)
    return env


def run_task(**values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "task"],
        cwd=REPO,
        env=task_env(**values),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_module_processes_the_object_named_by_its_environment(
    s3: S3Client, bucket: str
) -> None:
    data = os.urandom(5 * SMALL_PART + 1)
    s3.put_object(Bucket=bucket, Key="dir/my file.bin", Body=data)
    done = run_task(S3_BUCKET=bucket, S3_KEY="dir/my file.bin", DOWNLOAD_PART_SIZE=str(SMALL_PART))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert read_result(s3, bucket, "dir/my file.bin")["sha256"] == hashlib.sha256(data).hexdigest()
    start, finish = log_lines(done.stdout)[0], log_lines(done.stdout)[-1]
    assert (start["event"], start["bucket"], start["key"], start["size"]) == (
        "start",
        bucket,
        "dir/my file.bin",
        len(data),
    )
    assert finish["event"] == "finish"
    assert finish["resultKey"] == "results/dir/my file.bin.json"


def test_missing_settings_exit_bad_settings_with_one_json_line_naming_them(
    emulator_env: str,
) -> None:
    done = run_task()
    assert done.returncode == 2 == int(ExitCode.BAD_SETTINGS)
    [line] = log_lines(done.stdout)
    assert line["event"] == "failed"
    assert "S3_BUCKET is not set" in line["error"]
    assert "S3_KEY is not set" in line["error"]
    assert "environment" in line["check"]


def test_a_processor_named_in_task_processor_is_used(s3: S3Client, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"first\nsecond\n")
    done = run_task(
        S3_BUCKET=bucket, S3_KEY="notes.txt", TASK_PROCESSOR="tests.task.processors:first_line"
    )
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert read_result(s3, bucket, "notes.txt")["firstLine"] == "first"


@dataclass(frozen=True)
class Stopped:
    returncode: int
    stdout: str  # what followed the start line
    seconds: float  # from SIGTERM to exit


def sigterm_after_start(settle: float, **values: str) -> Stopped:
    """Start the task, wait for its start line and `settle` seconds more, send SIGTERM."""
    child = subprocess.Popen(
        [sys.executable, "-m", "task"],
        cwd=REPO,
        env=task_env(**values),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        start: dict[str, Any] = json.loads(child.stdout.readline())
        assert start["event"] == "start"
        time.sleep(settle)
        stopped_at = time.monotonic()
        child.send_signal(signal.SIGTERM)
        rest, _ = child.communicate(timeout=TIMEOUT)
        return Stopped(child.returncode, rest, time.monotonic() - stopped_at)
    finally:
        child.kill()


def test_an_unloadable_processor_is_a_settings_error(emulator_env: str) -> None:
    done = run_task(S3_BUCKET="b", S3_KEY="k", TASK_PROCESSOR="task.missing:process")
    assert done.returncode == ExitCode.BAD_SETTINGS
    assert "cannot be imported" in log_lines(done.stdout)[-1]["error"]


def test_sigterm_stops_the_task_promptly_with_a_log_line_and_no_result(
    s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="big", Body=b"x" * (40 * SMALL_PART))
    stopped = sigterm_after_start(
        settle=0.0,
        S3_BUCKET=bucket,
        S3_KEY="big",
        DOWNLOAD_PART_SIZE=str(SMALL_PART),
        TASK_PROCESSOR="tests.task.processors:slow",
    )
    assert stopped.seconds < 10  # "promptly": well inside Fargate's 30 s
    assert stopped.returncode == 143 == int(ExitCode.STOPPED)
    line = log_lines(stopped.stdout)[-1]
    assert (line["event"], line["reason"]) == ("failed", "STOPPED")
    assert result_keys(s3, bucket) == []


@pytest.mark.parametrize("stall", list(Stall), ids=[stall.name.lower() for stall in Stall])
def test_sigterm_stops_the_task_promptly_even_while_s3_has_stopped_answering(
    emulator_env: str, stall: Stall
) -> None:
    with stalling_s3(stall) as url:
        stopped = sigterm_after_start(
            settle=0.5,  # every range is now hanging
            S3_BUCKET="stalled",
            S3_KEY="object",
            AWS_ENDPOINT_URL=url,
        )
    # Fargate kills the container 30 s after SIGTERM, and then there is no log line.
    assert stopped.seconds < 5, f"took {stopped.seconds:.1f} s to stop"
    assert stopped.returncode == int(ExitCode.STOPPED)
    line = log_lines(stopped.stdout)[-1]
    assert (line["event"], line["reason"]) == ("failed", "STOPPED")


def test_a_task_past_its_time_limit_stops_with_timed_out_and_no_result(
    s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="slow", Body=b"x" * (40 * SMALL_PART))
    done = run_task(
        S3_BUCKET=bucket,
        S3_KEY="slow",
        DOWNLOAD_PART_SIZE=str(SMALL_PART),
        TASK_PROCESSOR="tests.task.processors:slow",
        TASK_TIMEOUT_SECONDS="1",
    )
    assert done.returncode == 8 == int(ExitCode.TIMED_OUT)
    line = log_lines(done.stdout)[-1]
    assert (line["event"], line["reason"]) == ("failed", "TIMED_OUT")
    assert "TASK_TIMEOUT_SECONDS=1" in line["error"]
    assert "taskTimeoutMinutes" in line["check"]
    assert result_keys(s3, bucket) == []


def test_a_time_limit_that_is_not_a_positive_number_is_a_settings_error(emulator_env: str) -> None:
    done = run_task(S3_BUCKET="b", S3_KEY="k", TASK_TIMEOUT_SECONDS="soon")
    assert done.returncode == ExitCode.BAD_SETTINGS
    assert "TASK_TIMEOUT_SECONDS='soon'" in log_lines(done.stdout)[-1]["error"]
