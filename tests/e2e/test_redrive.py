"""`python -m jobctl redrive` against the emulator: every kind of message the queues hold is
replayed through the deployed runner's code, and a failed job waits again on its own record,
once however often its message is replayed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import boto3
import job_record
import pytest
import reports

from jobctl.emulator import hold_tasks_running
from jobctl.evaluate import PROJECT_DIR
from jobctl.redrive import run
from jobctl.runner import SWEEP_EVENT
from tests.jobctl.conftest import Deployment, create_stack

RUNNER_ROLE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass
class Deployed(Deployment):
    """What `pulumi up` would have left behind, made directly in the emulator: the runner
    Lambda (its configuration is what the redrive loads), its table and queues."""

    function: str = ""


@pytest.fixture
def deployed(emulator_env: str) -> Deployed:
    hold_tasks_running(emulator_env)  # as the demo does: tasks stay RUNNING until StopTask
    name = f"redrive-{uuid.uuid4().hex[:8]}"
    env, outputs = create_stack(name, capacity_provider="FARGATE")
    role = boto3.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(RUNNER_ROLE_TRUST)
    )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.write(PROJECT_DIR / "taskrunner" / "handler.py", "handler.py")
    boto3.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": package.getvalue()},
        Environment={"Variables": env},
    )
    from jobctl.runner import load_runner

    # The runner that made the failures: the same code and configuration the redrive loads.
    runner = load_runner(env, emit_metric=lambda line: None)
    return Deployed(outputs, env, runner, function=name)


def redrive(deployed: Deployed, *, dry_run: bool = False) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run(
        stack=None,
        dead_letter_queue_url=deployed.outputs["deadLetterQueueUrl"],
        failed_jobs_queue_url=deployed.outputs["failedJobsQueueUrl"],
        function=deployed.function,
        dry_run=dry_run,
        limit=100,
        say=lines.append,
    )
    return code, lines


def queue_depth(url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def tasks_of(deployed: Deployed, key: str) -> list[str]:
    """The tasks ECS started for the key, oldest first."""
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster=deployed.env["CLUSTER_ARN"])["taskArns"]
    if not arns:
        return []
    described = ecs.describe_tasks(cluster=deployed.env["CLUSTER_ARN"], tasks=arns)["tasks"]
    return [
        task["taskArn"]
        for task in described
        for override in task["overrides"]["containerOverrides"]
        for item in override.get("environment", [])
        if item["name"] == "S3_KEY" and item["value"] == key
    ]


def failed_job_message(deployed: Deployed, key: str) -> str:
    """The runner's own report of a job that ran and exited 6 (taken off the queue)."""
    deployed.upload(key)
    deployed.stop(key, exit_code=6)
    sqs = boto3.client("sqs")
    url = deployed.outputs["failedJobsQueueUrl"]
    (sent,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=sent["ReceiptHandle"])
    return str(sent["Body"])


def send(deployed: Deployed, output: str, body: str, **extra: Any) -> None:
    boto3.client("sqs").send_message(QueueUrl=deployed.outputs[output], MessageBody=body, **extra)


def lambda_failure(payload: Any) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "requestContext": {
                "requestId": uuid.uuid4().hex,
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": payload,
            "responsePayload": {"errorMessage": "the runner failed (injected)"},
        }
    )


def test_a_failed_job_waits_again_on_its_own_record_and_its_next_attempt_starts(
    deployed: Deployed,
) -> None:
    key = "uploads/été 2026.csv"
    send(deployed, "failedJobsQueueUrl", failed_job_message(deployed, key))
    before = deployed.job(key)

    code, lines = redrive(deployed)

    assert code == 0, lines
    after = deployed.job(key)
    assert after.job_id == before.job_id  # the same record, not a new one
    assert (after.state, after.attempt_count, after.redrives) == ("starting", 2, 1)
    assert len(tasks_of(deployed, key)) == 2
    assert queue_depth(deployed.outputs["failedJobsQueueUrl"]) == 0
    text = "\n".join(lines)
    assert f"failed-jobs  {key} after 1 attempts: job-failure" in text
    assert "its job waits again for attempt 2" in text
    assert "sweep    the runner's sweep started 1 tasks" in text
    assert lines[-1] == "1 restarted, 0 kept after a failed restart, 0 unreadable (left in place)"


def test_replaying_the_same_message_twice_redrives_once(deployed: Deployed) -> None:
    key = "uploads/twice.csv"
    body = failed_job_message(deployed, key)
    send(deployed, "failedJobsQueueUrl", body)
    send(deployed, "failedJobsQueueUrl", body)  # delivered twice, or replayed from a copy

    code, lines = redrive(deployed)
    assert code == 0, lines
    assert len(tasks_of(deployed, key)) == 2  # the failed one, and one more
    assert deployed.job(key).redrives == 1
    assert any("nothing to restart" in line for line in lines)

    send(deployed, "failedJobsQueueUrl", body)  # and once more, later
    redrive(deployed)
    assert len(tasks_of(deployed, key)) == 2


def test_a_job_that_never_ran_is_restarted_from_the_runners_dead_letter(
    deployed: Deployed,
) -> None:
    runner = deployed.runner
    job = job_record.new_job(
        bucket="uploads-bucket", key="uploads/refused.csv", job_id=uuid.uuid4().hex, now=1000.0
    )
    created, _ = runner.store.create(job)
    failed = runner.store.apply(
        created, job_record.failed(created, now=1001.0, reason="ECS refused to start it: x")
    )
    reports.Reporter(runner.store, runner.settings, runner.services).failure(failed)
    assert queue_depth(deployed.outputs["deadLetterQueueUrl"]) == 1

    code, lines = redrive(deployed)

    assert code == 0, lines
    assert "dead-letter  uploads/refused.csv: ECS refused to start it: x" in lines
    assert deployed.job("uploads/refused.csv").job_id == job.job_id
    assert len(tasks_of(deployed, "uploads/refused.csv")) == 1
    assert queue_depth(deployed.outputs["deadLetterQueueUrl"]) == 0


def test_lambdas_records_of_an_upload_a_task_stop_and_a_sweep_are_replayed(
    deployed: Deployed,
) -> None:
    from tests.jobctl.conftest import s3_event

    send(deployed, "deadLetterQueueUrl", lambda_failure(s3_event("uploads/lost upload.csv")))
    deployed.upload("uploads/lost stop.csv")
    stop = deployed.stop("uploads/lost stop.csv", exit_code=0, deliver=False)
    send(deployed, "deadLetterQueueUrl", lambda_failure(stop))
    send(deployed, "deadLetterQueueUrl", lambda_failure(dict(SWEEP_EVENT)))

    code, lines = redrive(deployed)

    assert code == 0, lines
    assert len(tasks_of(deployed, "uploads/lost upload.csv")) == 1
    assert deployed.job("uploads/lost stop.csv").state == "succeeded"
    assert queue_depth(deployed.outputs["deadLetterQueueUrl"]) == 0
    assert lines[-1] == "3 restarted, 0 kept after a failed restart, 0 unreadable (left in place)"


def test_a_dry_run_lists_every_message_and_changes_nothing(deployed: Deployed) -> None:
    key = "uploads/dry.csv"
    send(deployed, "failedJobsQueueUrl", failed_job_message(deployed, key))
    send(deployed, "deadLetterQueueUrl", lambda_failure({"Records": []}))

    code, lines = redrive(deployed, dry_run=True)

    assert code == 1  # the empty on-failure record is unreadable: left for a person
    text = "\n".join(lines)
    assert "would make its failed job wait again (it made 1 attempts) (dry run)" in text
    # Each message once, however high the limit: listed messages stay hidden until the end.
    assert sum("(dry run)" in line for line in lines) == 1
    assert queue_depth(deployed.outputs["failedJobsQueueUrl"]) == 1
    assert queue_depth(deployed.outputs["deadLetterQueueUrl"]) == 1
    assert deployed.job(key).state == "failed"
    assert len(tasks_of(deployed, key)) == 1


def test_a_message_that_cannot_be_read_stays_in_its_queue(deployed: Deployed) -> None:
    send(deployed, "deadLetterQueueUrl", "{oops")
    code, lines = redrive(deployed)
    assert code == 1
    assert any("is not JSON" in line for line in lines)
    assert queue_depth(deployed.outputs["deadLetterQueueUrl"]) == 1


def test_the_command_line_redrive_reads_its_queues_from_flags(deployed: Deployed) -> None:
    send(deployed, "failedJobsQueueUrl", failed_job_message(deployed, "uploads/cli.csv"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobctl",
            "redrive",
            "--dry-run",
            "--dead-letter-queue-url",
            deployed.outputs["deadLetterQueueUrl"],
            "--failed-jobs-queue-url",
            deployed.outputs["failedJobsQueueUrl"],
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would replay its event through the runner (dry run)" in done.stdout


def test_without_pulumi_or_flags_the_redrive_says_what_to_pass(
    emulator_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    lines: list[str] = []
    code = run(
        stack="dev",
        dead_letter_queue_url=None,
        failed_jobs_queue_url=None,
        function=None,
        dry_run=True,
        limit=10,
        say=lines.append,
    )
    assert code == 2
    assert "needs the Pulumi CLI" in lines[0]
    assert "--dead-letter-queue-url" in lines[0]
