"""`jobctl show`: one upload's story, read from the job records the runner wrote."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Callable

import boto3
import pytest

from jobctl.provision import Pipeline
from jobctl.show import parse_target, show
from tests.jobctl.conftest import BUCKET, LOG_GROUP, Deployment, emulator_runner, jobctl_command


def shown(deployment: Deployment, target: str, **options: object) -> tuple[int, str]:
    lines: list[str] = []
    code = show(deployment.store, deployment.outputs, target, lines.append, **options)  # type: ignore[arg-type]
    return code, "\n".join(lines)


def test_an_interrupted_job_shows_both_attempts_how_each_ended_and_where_their_logs_are(
    deployment: Deployment,
) -> None:
    key = "uploads/quarterly report 2026.csv"
    deployment.upload(key)
    first = deployment.task_of(key)
    deployment.stop(key, exit_code=143, spot=True)
    deployment.retry_now(key)
    second = deployment.task_of(key)
    deployment.stop(key, exit_code=0)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"results/{key}.json", Body=b"{}")

    code, text = shown(deployment, f"s3://{BUCKET}/{key}")

    assert code == 0
    assert text.splitlines()[0] == f"s3://{BUCKET}/{key}"
    assert "succeeded after 2 attempts" in text
    attempt_1, attempt_2 = text.split("  attempt 1  ")[1].split("  attempt 2  ")
    assert first.rsplit("/", 1)[-1] in attempt_1
    assert "FARGATE_SPOT" in attempt_1
    assert "spot-interruption; SpotInterruption; exit 143" in attempt_1
    assert second.rsplit("/", 1)[-1] in attempt_2
    assert re.search(r"waited     [\d.]+ s before attempt 2", text)
    assert "succeeded; EssentialContainerExited; exit 0" in attempt_2
    # The exact command that reads each attempt's logs, in the stream the awslogs driver names.
    for task in (first, second):
        assert (
            f"aws logs get-log-events --log-group-name {LOG_GROUP} --log-stream-name "
            f"job/job/{task.rsplit('/', 1)[-1]}"
        ) in text
    assert f"result     s3://{BUCKET}/results/{key}.json (2 bytes" in text


def test_a_failed_job_says_why_and_how_to_replay_it(deployment: Deployment) -> None:
    deployment.upload("uploads/broken.csv")
    deployment.stop("uploads/broken.csv", exit_code=6)
    code, text = shown(deployment, "uploads/broken.csv", stack="prod")
    assert code == 0
    assert "failed after 1 attempt" in text
    assert "failed     job-failure: EssentialContainerExited" in text
    assert "exit code 6" in text
    assert "replay     python -m jobctl redrive --stack prod" in text


def test_a_job_still_waiting_says_so(moto: None) -> None:
    from tests.jobctl.conftest import deploy

    capped = deploy(cap=1)
    capped.upload("uploads/first.csv")
    capped.upload("uploads/second.csv")
    code, text = shown(capped, "uploads/second.csv")
    assert code == 0
    assert ": waiting" in text
    assert "waiting    for a slot since" in text
    assert "attempt 1" not in text


def test_every_upload_of_a_key_is_shown_oldest_first(deployment: Deployment) -> None:
    deployment.upload("uploads/again.csv", version_id="v1")
    deployment.upload("uploads/again.csv", version_id="v2")
    code, text = shown(deployment, "uploads/again.csv")
    assert code == 0
    assert text.index("(version v1)") < text.index("(version v2)")


def test_an_upload_with_no_job_is_named_with_the_likely_reasons(deployment: Deployment) -> None:
    code, text = shown(deployment, "s3://another-bucket/uploads/x.csv")
    assert code == 1
    assert text.startswith(
        "no job for s3://another-bucket/uploads/x.csv (the stack's bucket is uploads-bucket)"
    )
    assert "jobRecordDays" in text


@pytest.mark.parametrize(
    ("target", "bucket", "message"),
    [
        ("s3://only-a-bucket", None, "names no key: write s3://<bucket>/<key>"),
        ("uploads/a.csv", None, "is a key: name the stack (--stack)"),
    ],
)
def test_a_target_that_names_no_upload_is_refused_saying_how_to_write_it(
    target: str, bucket: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_target(target, bucket)


def test_the_command_reads_a_job_in_the_emulator_the_demo_provisions(
    emulator_stacks: Callable[[str], Pipeline], emulator_env: str
) -> None:
    dev = emulator_runner(emulator_stacks("dev"))
    key = f"uploads/shown by the command {uuid.uuid4().hex[:6]}.csv"
    dev.upload(key)
    task = dev.task_of(key)
    dev.stop(key, exit_code=0)
    done = jobctl_command("show", "--endpoint-url", emulator_env, key)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"s3://{dev.outputs['bucketName']}/{key}"
    assert "succeeded after 1 attempt" in lines[1]
    # The log command reaches the emulator too, as the demo writes the job's output there.
    assert (
        f"aws logs get-log-events --endpoint-url {emulator_env} --log-group-name "
        f"{dev.outputs['logGroupName']} --log-stream-name job/job/{task.rsplit('/', 1)[-1]}"
    ) in done.stdout


def test_a_stack_not_in_the_emulator_is_reported_as_a_failed_read(emulator_env: str) -> None:
    # The session's emulator may hold the stack from a test run before this one on the worker.
    reset = urllib.request.Request(f"{emulator_env}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    done = jobctl_command(
        "show", "--stack", "prod", "--endpoint-url", emulator_env, "uploads/a.csv"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("error: reading the job of uploads/a.csv failed")
