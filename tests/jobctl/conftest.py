"""A deployment in in-process moto, driven through the real runner: the job records `show`,
`jobs`, `status` and `redrive` read are the ones the runner's own code writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.moto_api import state_manager

from jobctl.emulator import HELD_TASKS, TASK_MODEL, emulator_environment, hold_tasks_running
from jobctl.evaluate import PROJECT_DIR, evaluate
from jobctl.fargate import EXITED_REASON, SPOT_REASON, stopped_event
from jobctl.provision import Pipeline, provision
from jobctl.runner import LoadedRunner, load_runner
from tests.fakes.job_table import create_job_table
from tests.taskrunner.conftest import MOTO_CREDENTIALS, s3_record
from tests.taskrunner.conftest import s3_event as runner_s3_event

BUCKET = "uploads-bucket"
LOG_GROUP = "/jobs/job"


def s3_event(key: str, *, version_id: str | None = None, bucket: str = BUCKET) -> dict[str, Any]:
    """An ObjectCreated event as S3 sends it, the key encoded as S3 encodes it; each a new
    upload (its own sequencer)."""
    record = s3_record(
        key,
        bucket=bucket,
        version_id=version_id or None,
        sequencer=uuid.uuid4().hex[:16].upper(),
        event_time="2026-12-06T10:00:00.000Z",
    )
    return runner_s3_event(record)


@dataclass
class Deployment:
    """The stack's resources in moto, its outputs, and its runner loaded as Lambda loads it."""

    outputs: dict[str, Any]
    env: dict[str, str]
    runner: LoadedRunner

    @property
    def store(self) -> Any:
        return self.runner.store

    def upload(self, key: str, **options: Any) -> Any:
        """S3's event for a new upload of `key`, handed to the runner."""
        options.setdefault("bucket", self.outputs["bucketName"])
        return self.runner(s3_event(key, **options), None)

    def job(self, key: str) -> Any:
        jobs = self.store.jobs_of(self.outputs["bucketName"], key)
        assert jobs, f"no job for {key}"
        return jobs[-1]

    def task_of(self, key: str) -> str:
        job = self.job(key)
        assert job.current is not None, f"{key} has no attempt: {job}"
        assert job.current.task_arn, f"{key} has no task: {job}"
        return str(job.current.task_arn)

    def stop(
        self, key: str, *, exit_code: int = 0, spot: bool = False, deliver: bool = True
    ) -> Any:
        """The task of `key` stops as Fargate stops it; its EventBridge event (returned, and
        handed to the runner unless `deliver` is False)."""
        arn = self.task_of(key)
        ecs = boto3.client("ecs")
        reason = SPOT_REASON if spot else EXITED_REASON
        ecs.stop_task(cluster=self.env["CLUSTER_ARN"], task=arn, reason=reason)
        (described,) = ecs.describe_tasks(cluster=self.env["CLUSTER_ARN"], tasks=[arn])["tasks"]
        now = time.time()
        event = stopped_event(
            described,
            container="job",
            exit_code=exit_code,
            stop_code="SpotInterruption" if spot else "EssentialContainerExited",
            reason=reason,
            started_at=now - 2,
            stopped_at=now,
        )
        if deliver:
            self.runner(event, None)
        return event

    def retry_now(self, key: str) -> None:
        """The retry of `key` is due (its delay passed, as if the clock had moved on), and the
        minute's sweep runs: it puts the retry back in its place and starts it."""
        job = self.job(key)
        assert job.retry_at is not None, f"{key} is not waiting out a retry's delay: {job}"
        self.store.apply(job, replace(job, retry_at=time.time() - 1))
        self.runner.sweep()

    def messages(self, output: str) -> list[dict[str, Any]]:
        """Every message in the queue an output names (made visible again afterwards)."""
        sqs = boto3.client("sqs")
        found = sqs.receive_message(
            QueueUrl=self.outputs[output],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        ).get("Messages", [])
        return [dict(message) for message in found]


def deploy(*, cap: int = 0, capacity_provider: str = "FARGATE_SPOT") -> Deployment:
    """Inside mock_aws: the network, cluster, task definition, job table and queues the program
    declares, and the runner with the environment it gives the Lambda."""
    env, outputs = create_stack(
        f"jobs-{uuid.uuid4().hex[:8]}", cap=cap, capacity_provider=capacity_provider
    )
    runner = load_runner(env, emit_metric=lambda line: None)
    return Deployment(outputs, env, runner)


def create_stack(
    name: str, *, cap: int = 0, capacity_provider: str = "FARGATE_SPOT"
) -> tuple[dict[str, str], dict[str, Any]]:
    """The stack's resources, made directly (moto in-process, or the emulator): the runner's
    environment and the stack's outputs."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto builds the task's ENI DNS name and fails without this.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=name, Description="jobs", VpcId=vpc)["GroupId"]
    ecs = boto3.client("ecs")
    cluster = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    task_definition = ecs.register_task_definition(
        family=f"{name}-job",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        # moto crashes on a container without container-level memory.
        containerDefinitions=[{"name": "job", "image": "job:latest", "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    sqs = boto3.client("sqs")
    queues = {
        variable: sqs.create_queue(QueueName=f"{name}-{suffix}")["QueueUrl"]
        for variable, suffix in (
            ("BACKLOG_QUEUE_URL", "backlog"),
            ("DEAD_LETTER_QUEUE_URL", "dlq"),
            ("FAILED_JOBS_QUEUE_URL", "failed-jobs"),
        )
    }
    table = create_job_table(boto3.client("dynamodb"), f"{name}-state")
    env = {
        "CLUSTER_ARN": cluster,
        "TASK_DEFINITION_ARN": task_definition,
        "CONTAINER_NAME": "job",
        "SUBNETS": subnet,
        "SECURITY_GROUPS": group,
        "ASSIGN_PUBLIC_IP": "DISABLED",
        "CAPACITY_PROVIDER": capacity_provider,
        "RESULT_PREFIX": "results/",
        **queues,
        "STATE_TABLE": table,
        "MAX_CONCURRENT_TASKS": str(cap),
        "JOB_LOG_GROUP": LOG_GROUP,
    }
    outputs = {
        "bucketName": BUCKET,
        "uploadPrefix": "uploads/",
        "resultPrefix": "results/",
        "clusterArn": cluster,
        "taskDefinitionArn": task_definition,
        "logGroupName": LOG_GROUP,
        "backlogQueueUrl": queues["BACKLOG_QUEUE_URL"],
        "deadLetterQueueUrl": queues["DEAD_LETTER_QUEUE_URL"],
        "failedJobsQueueUrl": queues["FAILED_JOBS_QUEUE_URL"],
        "jobTableName": table,
        "maxConcurrentTasks": cap,
    }
    return env, outputs


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto with dummy credentials, for this test alone."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # As the demo does (jobctl.emulator.HELD_TASKS): tasks stay RUNNING until StopTask.
    state_manager.set_transition(TASK_MODEL, HELD_TASKS)
    try:
        with mock_aws():
            yield
    finally:
        state_manager.unset_transition(TASK_MODEL)


@pytest.fixture
def deployment(moto: None) -> Deployment:
    return deploy()


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@pytest.fixture(scope="session")
def emulator_stacks(
    emulator_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Pipeline]:
    """Stack name -> the stack as the demo provisions it in the session's emulator (made on
    first use, and again if it is gone: the emulator runs in this process, and every test's
    mock_aws resets moto's state when it ends)."""
    made: dict[str, Pipeline] = {}

    def provisioned(stack: str) -> Pipeline:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in emulator_environment(emulator_url, {}).items():
                patch.setenv(name, value)
            buckets = {b["Name"] for b in boto3.client("s3").list_buckets().get("Buckets", [])}
            hold_tasks_running(emulator_url)
            if stack not in made or made[stack].bucket not in buckets:
                made[stack] = provision(evaluate(stack), tmp_path_factory.mktemp("scratch"))
        return made[stack]

    return provisioned


def emulator_runner(pipeline: Pipeline) -> Deployment:
    """The runner for a stack provisioned in the emulator, its clients made now (the test's
    environment points boto3 at the emulator), as a Deployment to drive."""
    runner = load_runner(pipeline.runner_env, emit_metric=lambda line: None)
    assert runner.services.dynamodb is not None
    assert runner.services.sqs is not None
    return Deployment(dict(pipeline.outputs), dict(pipeline.runner_env), runner)


def jobctl_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m jobctl ARGS` as a user runs it, from the project's folder."""
    return subprocess.run(
        [sys.executable, "-m", "jobctl", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
