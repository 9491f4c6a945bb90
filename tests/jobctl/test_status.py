"""`python -m jobctl status` against the emulator provisioned as the demo provisions it."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from jobctl.demo import Pipeline, provision
from jobctl.evaluate import PROJECT_DIR, evaluate
from jobctl.runner import METRIC_DIMENSION, METRIC_NAMESPACE, WAIT_METRIC
from jobctl.status import Status, read_status


@pytest.fixture(scope="module")
def prod_on_emulator(emulator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The prod stack, as the demo provisions it, in the session's emulator (module-wide)."""
    with pytest.MonkeyPatch.context() as patch:
        from jobctl.emulator import emulator_environment

        for name, value in emulator_environment(emulator_url, {}).items():
            patch.setenv(name, value)
        return provision(evaluate("prod"), tmp_path_factory.mktemp("scratch"))


def test_an_empty_deployment_reports_nothing_waiting(
    prod_on_emulator: Pipeline, emulator_env: str
) -> None:
    status = read_status(prod_on_emulator.outputs)
    assert status == Status(
        waiting=0, oldest_wait=None, pending=0, running=0, failed_jobs=0, dead_letters=0, cap=40
    )
    assert status.lines()[0].endswith("nothing waits")


def test_waiting_uploads_their_oldest_wait_and_running_tasks_are_counted(
    prod_on_emulator: Pipeline, emulator_env: str
) -> None:
    pipeline = prod_on_emulator
    sqs = boto3.client("sqs")
    for number in range(3):
        sqs.send_message(QueueUrl=pipeline.backlog_url, MessageBody=f'{{"n": {number}}}')
    now = datetime.datetime.now(datetime.UTC)
    boto3.client("cloudwatch").put_metric_data(
        Namespace=METRIC_NAMESPACE,
        MetricData=[
            {
                "MetricName": WAIT_METRIC,
                "Dimensions": [
                    {"Name": METRIC_DIMENSION, "Value": pipeline.backlog_url.rsplit("/", 1)[-1]}
                ],
                "Value": 600,
                "Unit": "Seconds",
                "Timestamp": now - datetime.timedelta(seconds=30),
            }
        ],
    )
    env = pipeline.runner_env
    boto3.client("ecs").run_task(
        cluster=pipeline.cluster_arn,
        taskDefinition=pipeline.task_definition_arn,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": env["SUBNETS"].split(","),
                "securityGroups": [env["SECURITY_GROUPS"]],
            }
        },
    )
    status = read_status(pipeline.outputs, now=now)
    assert status.waiting == 3
    assert status.oldest_wait is not None
    assert status.oldest_wait[0] == 600
    assert 25 <= status.oldest_wait[1] <= 35
    assert status.pending + status.running == 1
    assert "the oldest had waited 10 min 0 s" in status.lines()[0]


def test_the_command_reads_the_emulator_the_demo_prints(
    prod_on_emulator: Pipeline, emulator_env: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobctl",
            "status",
            "--stack",
            "prod",
            "--endpoint-url",
            emulator_env,
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"status of the emulator at {emulator_env}" in done.stdout
    assert "(cap 40)" in done.stdout


def test_without_the_pulumi_cli_the_command_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jobctl.__main__ import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here
    lines: list[str] = []
    monkeypatch.setattr("jobctl.__main__._say", lines.append)
    assert main(["status", "--stack", "dev"]) == 2
    assert "needs the Pulumi CLI" in lines[0]
    assert "--endpoint-url" in lines[0]
