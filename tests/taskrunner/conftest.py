"""Fixtures for the runner: its modules on sys.path, settings, moto's ECS and the fake ECS."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import pytest

# The Lambda package's modules are top-level (handler, task_starter, ...), as in the zip.
TASKRUNNER_DIR = Path(__file__).resolve().parents[2] / "taskrunner"
if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

from runner_settings import RunnerSettings, load_settings  # noqa: E402 - needs the path above
from services import Services  # noqa: E402

from tests.fakes.fake_ecs import FakeEcs, running_fake_ecs  # noqa: E402 - ditto, for ordering
from tests.fakes.job_table import create_job_table  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_ecs.client import ECSClient

EVENTS_DIR = Path(__file__).parent / "events"
BUCKET = "uploads-bucket"
RESULT_PREFIX = "results/"

# The keys of events/special_keys.json, decoded.
SPECIAL_KEYS = [
    "uploads/quarterly report 2026.csv",
    "uploads/a+b=c.csv",
    "uploads/100% done.csv",
    "uploads/café/naïve résumé.pdf",
    "uploads/📈 growth 🚀.xlsx",
    "uploads/~tilde!(paren)*star'quote.txt",
    "uploads/semi;colon,comma&amp?q#hash.txt",
]


RUNNER_ENV = {
    "CLUSTER_ARN": "arn:aws:ecs:us-east-1:123456789012:cluster/jobs",
    "TASK_DEFINITION_ARN": "arn:aws:ecs:us-east-1:123456789012:task-definition/job:1",
    "CONTAINER_NAME": "job",
    "SUBNETS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "SECURITY_GROUPS": "sg-0123abcd",
    "ASSIGN_PUBLIC_IP": "DISABLED",
    "CAPACITY_PROVIDER": "FARGATE_SPOT",
    "RESULT_PREFIX": RESULT_PREFIX,
    "BACKLOG_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-backlog",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-dlq",
    "FAILED_JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/jobs-failed-jobs",
    "STATE_TABLE": "jobs-state",
    "MAX_CONCURRENT_TASKS": "0",
    "JOB_LOG_GROUP": "/jobs/job",
}


# In-process moto only (no endpoint override): dummy credentials so nothing reaches AWS.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
_CLUSTER_NUMBERS = itertools.count()
QUEUES = {  # the runner's queues, by the variable naming each
    "BACKLOG_QUEUE_URL": "jobs-backlog",
    "DEAD_LETTER_QUEUE_URL": "jobs-dlq",
    "FAILED_JOBS_QUEUE_URL": "jobs-failed-jobs",
}


def load_event(name: str) -> Any:
    """An event from the corpus under tests/taskrunner/events/."""
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def s3_record(
    key: str,
    *,
    bucket: str = BUCKET,
    event_name: str = "ObjectCreated:Put",
    version_id: str | None = None,
    sequencer: str | None = "0062B5F3A8C1D2E3F4",
    event_time: str = "2026-11-28T14:00:00.000Z",
) -> dict[str, Any]:
    """A record shaped as S3 sends it, the key encoded as S3 encodes it."""
    s3_object: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": 12,
        "eTag": "0123456789abcdef0123456789abcdef",
    }
    if version_id is not None:
        s3_object["versionId"] = version_id
    if sequencer is not None:
        s3_object["sequencer"] = sequencer
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": event_time,
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": s3_object,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


@pytest.fixture
def settings() -> RunnerSettings:
    return load_settings(RUNNER_ENV)


class RecordingSqs:
    """The SQS calls the runner makes, recorded; `refuse` makes every call fail as SQS would."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.sent: list[dict[str, Any]] = []
        self.visibility: list[dict[str, Any]] = []

    def _check(self, operation: str) -> None:
        if self.refuse:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "AccessDenied", "Message": "no sqs:SendMessage"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]

    def send_message(self, **request: Any) -> dict[str, Any]:
        self._check("SendMessage")
        self.sent.append(request)
        return {"MessageId": f"m-{len(self.sent)}"}

    def change_message_visibility_batch(self, **request: Any) -> dict[str, Any]:
        self._check("ChangeMessageVisibilityBatch")
        assert 1 <= len(request["Entries"]) <= 10, "SQS takes 1 to 10 entries per batch"
        self.visibility.append(request)
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    def parked_keys(self) -> list[str]:
        """The decoded keys of the uploads sent to the backlog, in order."""
        from urllib.parse import unquote_plus

        return [
            unquote_plus(record["s3"]["object"]["key"])
            for message in self.sent
            if message["QueueUrl"] == RUNNER_ENV["BACKLOG_QUEUE_URL"]
            for record in json.loads(message["MessageBody"])["Records"]
        ]


def services_for(ecs: Any, sqs: RecordingSqs | None = None, dynamodb: Any = None) -> Services:
    """The runner's services around a test's ECS client, with a recording SQS; DynamoDB is
    moto's unless given (inside `mock_aws`)."""
    if dynamodb is None:
        import boto3

        dynamodb = boto3.client("dynamodb")
    return Services(ecs, sqs=sqs or RecordingSqs(), dynamodb=dynamodb)  # type: ignore[arg-type]


@pytest.fixture
def fake_ecs() -> Iterator[FakeEcs]:
    with running_fake_ecs() as fake:
        yield fake


@pytest.fixture
def backoff_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's retry backoff, recorded instead of slept: retry tests take milliseconds."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    return sleeps


@pytest.fixture(scope="module")
def moto_world() -> Iterator[tuple[ECSClient, dict[str, str]]]:
    """moto with a Fargate task definition and a network, shared by a module's tests (it is
    the slow part); each test gets its own cluster from `moto_ecs`."""
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        for name, value in MOTO_CREDENTIALS.items():
            patch.setenv(name, value)
        with mock_aws():
            ec2 = boto3.client("ec2")
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            # moto builds the task's ENI DNS name and fails without this.
            ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
            group = ec2.create_security_group(GroupName="jobs", Description="jobs", VpcId=vpc)[
                "GroupId"
            ]
            ecs = boto3.client("ecs")
            task_definition = ecs.register_task_definition(
                family="job",
                requiresCompatibilities=["FARGATE"],
                networkMode="awsvpc",
                cpu="256",
                memory="512",
                # moto crashes on a container without container-level memory (REFERENCE.md).
                containerDefinitions=[{"name": "job", "image": "job:latest", "memory": 512}],
                tags=[{"key": "project", "value": "s3-fargate-jobs"}],
            )["taskDefinition"]["taskDefinitionArn"]
            env = {
                **RUNNER_ENV,
                "TASK_DEFINITION_ARN": task_definition,
                "SUBNETS": subnet,
                "SECURITY_GROUPS": group,
            }
            yield ecs, env


@pytest.fixture
def moto_ecs(
    moto_world: tuple[ECSClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> tuple[ECSClient, dict[str, str]]:
    """moto's ECS with a fresh cluster and a fresh job table for this test: (client, the
    runner's environment)."""
    import boto3

    ecs, env = moto_world
    for name, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    number = next(_CLUSTER_NUMBERS)
    cluster = ecs.create_cluster(clusterName=f"jobs-{number}")["cluster"]
    table = create_job_table(boto3.client("dynamodb"), f"jobs-state-{number}")
    sqs = boto3.client("sqs")
    queues = {
        variable: sqs.create_queue(QueueName=f"{name}-{number}")["QueueUrl"]
        for variable, name in QUEUES.items()
    }
    return ecs, {**env, **queues, "CLUSTER_ARN": cluster["clusterArn"], "STATE_TABLE": table}


@pytest.fixture
def task_environment(
    moto_ecs: tuple[ECSClient, dict[str, str]],
) -> Callable[[str], dict[str, str]]:
    """Task ARN -> its container's override environment, read back through DescribeTasks."""
    ecs, env = moto_ecs

    def read(task_arn: str) -> dict[str, str]:
        (task,) = ecs.describe_tasks(cluster=env["CLUSTER_ARN"], tasks=[task_arn])["tasks"]
        (override,) = task["overrides"]["containerOverrides"]
        assert override["name"] == env["CONTAINER_NAME"]
        return {pair["name"]: pair["value"] for pair in override.get("environment", [])}

    return read


@dataclass
class World:
    """The runner over the fake ECS (which knows clientToken, failures and task lives) and
    moto's DynamoDB and SQS: what each kind of event does to the job table and the queues."""

    settings: RunnerSettings
    services: Services
    ecs: FakeEcs
    env: dict[str, str]
    skew: list[float]  # seconds the runner's clock is ahead of the wall clock
    metrics: list[dict[str, Any]]  # the embedded-metric lines the runner wrote

    def later(self, seconds: float) -> None:
        """Let `seconds` pass for the runner (its clock only: nothing sleeps)."""
        self.skew[0] += seconds

    @property
    def store(self) -> Any:
        return self.services.job_store(self.settings)

    def upload(self, *records: dict[str, Any], **extra: Any) -> Any:
        from uploads import handle_uploads

        return handle_uploads({"Records": list(records), **extra}, self.settings, self.services)

    def stopped(self, task_arn: str, **how: Any) -> Any:
        """The task stops as Fargate stops it (`how`: FakeEcs.finish's options), and its event
        reaches the runner."""
        from task_events import handle_task_event

        self.ecs.finish(task_arn, **how)
        return handle_task_event(self.ecs.state_change(task_arn), self.settings, self.services)

    def sweep(self) -> Any:
        from sweep import handle_sweep

        return handle_sweep({"detail-type": "Scheduled Event"}, self.settings, self.services)

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """Every message in one of the runner's queues (by its variable), left in place."""
        import boto3

        sqs = boto3.client("sqs")
        found = sqs.receive_message(
            QueueUrl=self.env[queue],
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return [dict(message) for message in found]

    def job(self, key: str, bucket: str = BUCKET) -> Any:
        (found,) = self.store.jobs_of(bucket, key)
        return found

    def with_settings(self, **changes: Any) -> World:
        from dataclasses import replace

        return replace(self, settings=replace(self.settings, **changes))


@pytest.fixture
def world(
    moto_ecs: tuple[ECSClient, dict[str, str]], fake_ecs: FakeEcs, monkeypatch: pytest.MonkeyPatch
) -> World:
    import boto3
    from services import client_config

    _, env = moto_ecs
    # The fake answers at once; a short read timeout makes a delayed answer a lost one quickly.
    config = client_config(max_attempts=2, connect_timeout=1, read_timeout=1)
    skew = [0.0]
    metrics: list[dict[str, Any]] = []
    services = Services(
        fake_ecs.client(config),
        sqs=boto3.client("sqs"),
        dynamodb=boto3.client("dynamodb"),
        clock=lambda: time.time() + skew[0],
        emit_metric=lambda line: metrics.append(json.loads(line)),
    )
    return World(load_settings(env), services, fake_ecs, env, skew, metrics)
