"""`python -m jobctl redrive` against the emulator: queued failures become tasks again."""

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
import pytest

from jobctl.evaluate import PROJECT_DIR
from jobctl.redrive import run

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


@dataclass(frozen=True)
class Deployment:
    """What `pulumi up` would have left behind, made directly in the emulator."""

    cluster_arn: str
    function: str
    dead_letter_url: str
    failed_jobs_url: str


@pytest.fixture
def deployment(emulator_env: str) -> Deployment:
    name = f"redrive-{uuid.uuid4().hex[:8]}"
    ec2 = boto3.client("ec2")
    ecs = boto3.client("ecs")
    sqs = boto3.client("sqs")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=name, Description="jobs", VpcId=vpc)["GroupId"]
    cluster_arn = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    task_definition = ecs.register_task_definition(
        family=f"{name}-job",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "job", "image": "job:latest", "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    role = boto3.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps(RUNNER_ROLE_TRUST)
    )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.write(PROJECT_DIR / "taskrunner" / "handler.py", "handler.py")
    dead_letter_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    backlog_url = sqs.create_queue(QueueName=f"{name}-backlog")["QueueUrl"]
    boto3.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": package.getvalue()},
        Environment={
            "Variables": {
                "CLUSTER_ARN": cluster_arn,
                "TASK_DEFINITION_ARN": task_definition,
                "CONTAINER_NAME": "job",
                "SUBNETS": subnet,
                "SECURITY_GROUPS": group,
                "ASSIGN_PUBLIC_IP": "ENABLED",
                "CAPACITY_PROVIDER": "FARGATE",
                "RESULT_PREFIX": "results/",
                "BACKLOG_QUEUE_URL": backlog_url,
                "DEAD_LETTER_QUEUE_URL": dead_letter_url,
                "MAX_CONCURRENT_TASKS": "0",
            }
        },
    )
    return Deployment(
        cluster_arn=cluster_arn,
        function=name,
        dead_letter_url=dead_letter_url,
        failed_jobs_url=sqs.create_queue(QueueName=f"{name}-failed")["QueueUrl"],
    )


def s3_event(key: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-28T10:00:00.000Z",
                "s3": {
                    "bucket": {"name": "uploads-bucket"},
                    "object": {"key": key, "sequencer": "0062A1B2C3D4E5F601", "size": 3},
                },
            }
        ]
    }


def dead_letter_record(encoded_key: str) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": s3_event(encoded_key),
            "responsePayload": {"errorMessage": "RunTask failures: RESOURCE:MEMORY"},
        }
    )


def failed_job_message(cluster_arn: str, key: str) -> str:
    return json.dumps(
        {
            "taskArn": f"{cluster_arn.replace(':cluster/', ':task/')}/0f1e2d3c",
            "stopCode": "EssentialContainerExited",
            "stoppedReason": "Essential container in task exited",
            "exitCode": "6",
            "environment": [
                {"name": "S3_BUCKET", "value": "uploads-bucket"},
                {"name": "S3_KEY", "value": key},
            ],
            "logStream": "job/job/{task id}",
        }
    )


def queue_depth(url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def started_keys(deployment: Deployment) -> list[str]:
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster=deployment.cluster_arn)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=deployment.cluster_arn, tasks=arns)["tasks"]
    return sorted(
        item["value"]
        for task in tasks
        for override in task["overrides"]["containerOverrides"]
        for item in override.get("environment", [])
        if item["name"] == "S3_KEY"
    )


def fill(deployment: Deployment) -> None:
    sqs = boto3.client("sqs")
    sqs.send_message(
        QueueUrl=deployment.dead_letter_url, MessageBody=dead_letter_record("uploads/a+b.csv")
    )
    sqs.send_message(
        QueueUrl=deployment.failed_jobs_url,
        MessageBody=failed_job_message(deployment.cluster_arn, "uploads/été.csv"),
    )


def redrive(deployment: Deployment, *, dry_run: bool) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = run(
        stack=None,
        dead_letter_queue_url=deployment.dead_letter_url,
        failed_jobs_queue_url=deployment.failed_jobs_url,
        function=deployment.function,
        dry_run=dry_run,
        limit=100,
        say=lines.append,
    )
    return code, lines


def test_a_dry_run_lists_every_message_and_changes_nothing(deployment: Deployment) -> None:
    fill(deployment)
    code, lines = redrive(deployment, dry_run=True)
    assert code == 0, lines
    text = "\n".join(lines)
    assert (
        "dead-letter  uploads/a b.csv: RetriesExhausted: RunTask failures: RESOURCE:MEMORY" in text
    )
    assert "failed-jobs  uploads/été.csv: EssentialContainerExited" in text
    assert "logs: job/job/0f1e2d3c" in text
    # Each message once, however high the limit: listed messages stay hidden until the end.
    assert sum("would restart it (dry run)" in line for line in lines) == 2
    assert queue_depth(deployment.dead_letter_url) == 1
    assert queue_depth(deployment.failed_jobs_url) == 1
    assert started_keys(deployment) == []


def test_a_redrive_restarts_each_upload_and_only_then_deletes_its_message(
    deployment: Deployment,
) -> None:
    fill(deployment)
    code, lines = redrive(deployment, dry_run=False)
    assert code == 0, lines
    assert started_keys(deployment) == ["uploads/a b.csv", "uploads/été.csv"]
    assert queue_depth(deployment.dead_letter_url) == 0
    assert queue_depth(deployment.failed_jobs_url) == 0
    assert lines[-1] == "2 restarted, 0 kept after a failed restart, 0 unreadable (left in place)"


def test_a_message_that_cannot_be_restarted_stays_in_its_queue(deployment: Deployment) -> None:
    boto3.client("sqs").send_message(QueueUrl=deployment.dead_letter_url, MessageBody="{oops")
    code, lines = redrive(deployment, dry_run=False)
    assert code == 1
    assert any("is not JSON" in line for line in lines)
    assert queue_depth(deployment.dead_letter_url) == 1


def test_the_command_line_redrive_reads_its_queues_from_flags(deployment: Deployment) -> None:
    fill(deployment)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobctl",
            "redrive",
            "--dry-run",
            "--dead-letter-queue-url",
            deployment.dead_letter_url,
            "--failed-jobs-queue-url",
            deployment.failed_jobs_url,
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would restart it (dry run)" in done.stdout


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
