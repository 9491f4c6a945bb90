"""The whole pipeline on this machine: S3 upload -> event -> runner -> task -> result.

Nothing here is a second copy of the infrastructure: the emulator is provisioned from what the
Pulumi program declares for the chosen stack (evaluated offline), the real runner handler turns
the emulator's own S3 events into RunTask calls, and each started task runs `python -m task`
(or the real image, with --docker) with exactly the overrides the runner sent.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

from jobctl import status
from jobctl.emulator import (
    EmulatorError,
    emulator_environment,
    emulator_process,
    point_at_emulator,
)
from jobctl.evaluate import PROJECT_DIR, Evaluation, ProgramError, evaluate
from jobctl.runner import load_runner

EVENT_WAIT_SECONDS = 15.0  # the emulator delivers within milliseconds; this bounds a stuck run
TASK_TIMEOUT_SECONDS = 30 * 60
DOCKER_IMAGE = "s3-fargate-jobs-task:local"
# The demo compresses the backlog's time: a waiting upload is tried again within a second or
# two, not within minutes (the runner's settings for it; everything else is as deployed).
DEMO_RETRY_SECONDS = {"BACKLOG_FIRST_RETRY_SECONDS": "1", "BACKLOG_MAX_RETRY_SECONDS": "2"}
BURST_SECONDS = 300.0  # bounds a burst that stops draining
LOCAL_TASK_SLOTS = 8  # processes run at once on this machine; more tasks wait their turn here
POLL_SECONDS = 0.3

Printer = Callable[[str], None]


class DemoError(Exception):
    """A step of the pipeline failed; the message says which and why."""


@dataclass(frozen=True)
class Pipeline:
    """What the emulator holds after provisioning, all of it taken from the program."""

    bucket: str
    upload_prefix: str
    result_prefix: str
    queue_url: str
    cluster_arn: str
    task_definition_arn: str
    container_name: str
    runner_env: Mapping[str, str]
    container_env: Mapping[str, str]
    platform: str
    backlog_url: str
    backlog_arn: str
    outputs: Mapping[str, Any]
    secret_names: tuple[str, ...] = ()  # the task definition's `secrets`: ECS sets them, not us


@dataclass
class Outcome:
    """One upload's path through the pipeline."""

    key: str
    size: int
    uploaded_at: float
    event_after: float | None = None
    task_arn: str | None = None
    exit_code: int | None = None
    task_seconds: float | None = None
    result_key: str | None = None
    result: dict[str, Any] | None = None
    failure: str | None = None
    log: list[str] = field(default_factory=list)
    parked: bool = False  # waiting in the backlog for capacity

    @property
    def ok(self) -> bool:
        return self.failure is None and self.exit_code == 0 and self.result is not None


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --- provisioning -----------------------------------------------------------------------------


def _declared(evaluation: Evaluation, type_: str) -> dict[str, Any]:
    return dict(evaluation.one(type_).inputs)


def _notification_rules(evaluation: Evaluation) -> list[dict[str, Any]]:
    targets = _declared(evaluation, "aws:s3/bucketNotification:BucketNotification")
    return [
        {
            "events": target["events"],
            "rules": [
                {"Name": name, "Value": target[field_name]}
                for name, field_name in (("prefix", "filterPrefix"), ("suffix", "filterSuffix"))
                if target.get(field_name)
            ],
        }
        for target in targets["lambdaFunctions"]
    ]


def provision(evaluation: Evaluation, scratch_dir: Path) -> Pipeline:
    """Create in the emulator what the program declares, and check the names match."""
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    ecs = boto3.client("ecs")
    ec2 = boto3.client("ec2")
    outputs = evaluation.outputs
    bucket = outputs["bucketName"]
    s3.create_bucket(Bucket=bucket)
    if evaluation.of_type("aws:s3/bucketVersioning:BucketVersioning"):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    # The emulator cannot invoke a Lambda without Docker, so the same notification filter
    # delivers to a queue, and this process hands each event to the real handler.
    queue_url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue_configurations: list[Any] = [
        {
            "QueueArn": queue_arn,
            "Events": rule["events"],
            **({"Filter": {"Key": {"FilterRules": rule["rules"]}}} if rule["rules"] else {}),
        }
        for rule in _notification_rules(evaluation)
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configurations}
    )

    declared_env: dict[str, str] = dict(
        _declared(evaluation, "aws:lambda/function:Function")["environment"]["variables"]
    )
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{index}.0/24")["Subnet"]["SubnetId"]
        for index, _ in enumerate(declared_env["SUBNETS"].split(","))
    ]
    group = ec2.create_security_group(
        GroupName="tasks", Description="Fargate jobs: no inbound", VpcId=vpc_id
    )["GroupId"]

    cluster = evaluation.one("aws:ecs/cluster:Cluster").outputs["name"]
    cluster_arn = ecs.create_cluster(clusterName=cluster)["cluster"]["clusterArn"]
    task = _declared(evaluation, "aws:ecs/taskDefinition:TaskDefinition")
    containers = json.loads(task["containerDefinitions"])
    registration: dict[str, Any] = {
        "family": task["family"],
        "containerDefinitions": containers,
        "cpu": task["cpu"],
        "memory": task["memory"],
        "networkMode": task["networkMode"],
        "requiresCompatibilities": task["requiresCompatibilities"],
        "executionRoleArn": task["executionRoleArn"],
        "taskRoleArn": task["taskRoleArn"],
        "runtimePlatform": task["runtimePlatform"],
        "volumes": [{"name": v["name"]} for v in task.get("volumes", [])],
    }
    if task.get("ephemeralStorage"):
        registration["ephemeralStorage"] = {"sizeInGiB": int(task["ephemeralStorage"]["sizeInGib"])}
    task_definition_arn = ecs.register_task_definition(**registration)["taskDefinition"][
        "taskDefinitionArn"
    ]
    for what, declared, actual in (
        ("cluster", outputs["clusterArn"], cluster_arn),
        ("task definition", outputs["taskDefinitionArn"], task_definition_arn),
    ):
        if declared != actual:
            raise DemoError(
                f"provisioning: the emulator's {what} is {actual}, but the program declares "
                f"{declared}; the demo would not test what the stack deploys"
            )

    backlog_url, backlog_arn = _provision_queues(evaluation, sqs)
    table = evaluation.of_type("aws:dynamodb/table:Table")
    if table:
        boto3.client("dynamodb").create_table(
            TableName=table[0].outputs["name"],
            KeySchema=[{"AttributeName": table[0].inputs["hashKey"], "KeyType": "HASH"}],
            AttributeDefinitions=[
                {"AttributeName": a["name"], "AttributeType": a["type"]}
                for a in table[0].inputs["attributes"]
            ],
            BillingMode="PAY_PER_REQUEST",
        )

    # Ids of network resources are the emulator's own; everything else is as declared.
    runner_env = {
        **declared_env,
        "SUBNETS": ",".join(subnets),
        "SECURITY_GROUPS": group,
        **DEMO_RETRY_SECONDS,
    }
    (container,) = containers
    container_env = {e["name"]: e["value"] for e in container.get("environment", [])}
    container_env["TMPDIR"] = str(scratch_dir)  # the writable scratch volume, here a temp dir
    return Pipeline(
        bucket=bucket,
        upload_prefix=outputs["uploadPrefix"],
        result_prefix=outputs["resultPrefix"],
        queue_url=queue_url,
        cluster_arn=cluster_arn,
        task_definition_arn=task_definition_arn,
        container_name=container["name"],
        runner_env=runner_env,
        container_env=container_env,
        # The platform the program builds the image for, from the same setting as the task's.
        platform=_declared(evaluation, "docker:index/image:Image")["build"]["platform"],
        backlog_url=backlog_url,
        backlog_arn=backlog_arn,
        outputs=outputs,
        secret_names=tuple(secret["name"] for secret in container.get("secrets", [])),
    )


def _provision_queues(evaluation: Evaluation, sqs: Any) -> tuple[str, str]:
    """Every queue the program declares, named and set up as declared (dead-letter targets
    first); returns the backlog's URL and ARN."""
    declared = sorted(
        evaluation.of_type("aws:sqs/queue:Queue"), key=lambda q: bool(q.inputs.get("redrivePolicy"))
    )
    arns: dict[str, str] = {}  # declared ARN -> the emulator's
    urls: dict[str, tuple[str, str]] = {}
    for queue in declared:
        attributes = {
            "VisibilityTimeout": str(int(queue.inputs.get("visibilityTimeoutSeconds", 30))),
            "MessageRetentionPeriod": str(int(queue.inputs["messageRetentionSeconds"])),
        }
        if queue.inputs.get("redrivePolicy"):
            redrive = json.loads(queue.inputs["redrivePolicy"])
            redrive["deadLetterTargetArn"] = arns[redrive["deadLetterTargetArn"]]
            attributes["RedrivePolicy"] = json.dumps(redrive)
        url = sqs.create_queue(QueueName=queue.outputs["name"], Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        arns[queue.outputs["arn"]] = arn
        urls[queue.name] = (url, arn)
    (backlog,) = (value for name, value in urls.items() if name.endswith("-runner-backlog"))
    return backlog


# --- the runner ---------------------------------------------------------------------------------


def receive_events(queue_url: str, wanted: int, deadline: float) -> Iterator[dict[str, Any]]:
    """S3 events from the notification queue, until `wanted` upload events arrived or time is up."""
    sqs = boto3.client("sqs")
    received = 0
    while received < wanted and time.monotonic() < deadline:
        wait = max(0, min(1, int(deadline - time.monotonic())))
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        ).get("Messages", [])
        if not messages and not wait:
            time.sleep(0.05)  # the deadline's last second: poll, but do not spin on the emulator
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            event = json.loads(message["Body"])
            if event.get("Event") == "s3:TestEvent":
                continue  # sent once when the notification is configured
            received += len(event.get("Records", []))
            yield event


# --- the task -------------------------------------------------------------------------------------


def task_command(pipeline: Pipeline, env: Mapping[str, str], docker: bool) -> list[str]:
    if not docker:
        return [sys.executable, "-m", "task"]
    command = [
        "docker", "run", "--rm", "--network", "host", "--read-only",
        "--tmpfs", f"{pipeline.container_env['TMPDIR']}:rw", "--user", "1000:1000",
        "--platform", pipeline.platform,
    ]  # fmt: skip
    for name in env:
        command += ["-e", name]  # values come from the environment, not the command line
    return [*command, DOCKER_IMAGE]


def build_image(pipeline: Pipeline, say: Printer) -> None:
    if shutil.which("docker") is None or (
        subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0
    ):
        raise DemoError("--docker needs a running Docker engine; `docker info` failed")
    say(f"building the task image for {pipeline.platform} …")
    subprocess.run(
        ["docker", "build", "--platform", pipeline.platform, "-t", DOCKER_IMAGE, "task"],
        cwd=PROJECT_DIR,
        check=True,
    )


def start_task_process(
    pipeline: Pipeline, task_arn: str, *, endpoint: str, docker: bool, **streams: Any
) -> subprocess.Popen[str]:
    """Run the task the runner started, as Fargate would: with exactly its overrides."""
    described = boto3.client("ecs").describe_tasks(cluster=pipeline.cluster_arn, tasks=[task_arn])[
        "tasks"
    ][0]
    overrides = {
        item["name"]: item["value"]
        for container in described.get("overrides", {}).get("containerOverrides", [])
        if container.get("name") == pipeline.container_name
        for item in container.get("environment", [])
    }
    task_env = {**pipeline.container_env, **overrides}
    env = emulator_environment(endpoint, {**os.environ, **task_env})
    return subprocess.Popen(
        task_command(pipeline, {**task_env, **emulator_environment(endpoint, {})}, docker),
        cwd=PROJECT_DIR,
        env=env,
        text=True,
        encoding="utf-8",
        errors="replace",
        **streams,
    )


def mark_stopped(pipeline: Pipeline, task_arn: str, exit_code: int) -> None:
    """Tell ECS the task ended, as Fargate does when its essential container exits."""
    boto3.client("ecs").stop_task(
        cluster=pipeline.cluster_arn,
        task=task_arn,
        reason=f"Essential container in task exited (exit code {exit_code})",
    )


def run_task(
    pipeline: Pipeline, task_arn: str, *, endpoint: str, docker: bool, say: Printer
) -> tuple[int, float, list[str]]:
    """Run the task the runner started, showing its log lines; mark it stopped."""
    started = time.monotonic()
    process = start_task_process(
        pipeline,
        task_arn,
        endpoint=endpoint,
        docker=docker,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    ticker = _Ticker(say, started)
    ticker.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            ticker.show(_describe_log_line(line))
        exit_code = process.wait(timeout=TASK_TIMEOUT_SECONDS)
    finally:
        ticker.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    mark_stopped(pipeline, task_arn, exit_code)
    return exit_code, seconds, lines


# --- the backlog: the event source mapping, and CloudWatch reading the runner's metric ----------


def publish_metric(line: str) -> None:
    """What CloudWatch Logs does with an embedded-metric line the runner writes: a metric."""
    record = json.loads(line)
    directives = record["_aws"]
    timestamp = datetime.datetime.fromtimestamp(directives["Timestamp"] / 1000, datetime.UTC)
    for directive in directives["CloudWatchMetrics"]:
        (dimensions,) = directive["Dimensions"]
        boto3.client("cloudwatch").put_metric_data(
            Namespace=directive["Namespace"],
            MetricData=[
                {
                    "MetricName": metric["Name"],
                    "Unit": metric["Unit"],
                    "Value": float(record[metric["Name"]]),
                    "Timestamp": timestamp,
                    "Dimensions": [
                        {"Name": name, "Value": str(record[name])} for name in dimensions
                    ],
                }
                for metric in directive["Metrics"]
            ],
        )


def poll_backlog(pipeline: Pipeline, runner: Callable[[Any, Any], Any], say: Printer) -> int:
    """One batch from the backlog to the runner, as the event source mapping hands it over;
    the messages the runner does not name in batchItemFailures are deleted. Returns the batch's
    size."""
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=pipeline.backlog_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    if not messages:
        return 0
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "eventSource": "aws:sqs",
                "eventSourceARN": pipeline.backlog_arn,
            }
            for m in messages
        ]
    }
    try:
        answer = runner(event, None)
    except Exception as error:  # the whole batch comes back after the visibility timeout
        say(f"runner   raised on a backlog batch: {error}")
        return len(messages)
    keep = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
    for message in messages:
        if message["MessageId"] not in keep:
            sqs.delete_message(
                QueueUrl=pipeline.backlog_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return len(messages)


def tasks_started_for(pipeline: Pipeline, keys: set[str]) -> dict[str, str]:
    """key -> ARN of the running tasks ECS started for these keys (from the backlog, say)."""
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster=pipeline.cluster_arn, desiredStatus="RUNNING")["taskArns"]
    found: dict[str, str] = {}
    for start in range(0, len(arns), 100):
        for task in ecs.describe_tasks(
            cluster=pipeline.cluster_arn, tasks=arns[start : start + 100]
        )["tasks"]:
            for container in task.get("overrides", {}).get("containerOverrides", []):
                env = {item["name"]: item["value"] for item in container.get("environment", [])}
                if env.get("S3_KEY") in keys:
                    found[env["S3_KEY"]] = task["taskArn"]
    return found


def wait_in_backlog(
    pipeline: Pipeline,
    runner: Callable[[Any, Any], Any],
    outcome: Outcome,
    say: Printer,
    deadline: float,
) -> None:
    """Hand the backlog to the runner until the parked upload's task has started."""
    while time.monotonic() < deadline:
        poll_backlog(pipeline, runner, say)
        started = tasks_started_for(pipeline, {outcome.key})
        if outcome.key in started:
            outcome.task_arn = started[outcome.key]
            say(f"backlog  {outcome.key} started from the backlog")
            return
        time.sleep(POLL_SECONDS)
    outcome.failure = "backlog: it was still waiting when the demo stopped waiting"


def _describe_log_line(line: str) -> str:
    """The task's JSON log line, shortened for a person watching."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return line.strip()
    event = record.get("event")
    if event == "start":
        sized_for = (
            f" (sized for {record['vcpus']:g} vCPU, from {record.get('vcpusFrom')})"
            if isinstance(record.get("vcpus"), int | float)
            else ""
        )
        return (
            f"start     {human_size(record.get('size', 0))}, up to {record.get('concurrency')} "
            f"ranges of {human_size(record.get('partSize', 0))} in parallel{sized_for}"
        )
    if event == "progress":
        return f"progress  {record.get('percent')} % at {record.get('mbPerSecond')} MB/s"
    if event == "finish":
        return f"finish    {record.get('seconds')} s, {record.get('mbPerSecond')} MB/s"
    if event == "failed":
        return f"failed    {record.get('reason')}: {record.get('error')}"
    return line.strip()


class _Ticker:
    """A live line while a task runs: elapsed time and the task's latest log line."""

    def __init__(self, say: Printer, started: float) -> None:
        self._say = say
        self._started = started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def show(self, text: str) -> None:
        with self._lock:
            self._say(f"           │ {text}")

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            with self._lock:
                self._say(f"           │ … running for {time.monotonic() - self._started:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


# --- the run ------------------------------------------------------------------------------------


def upload(pipeline: Pipeline, path: Path) -> Outcome:
    key = pipeline.upload_prefix + path.name
    size = path.stat().st_size
    boto3.client("s3").upload_file(str(path), pipeline.bucket, key)
    return Outcome(key=key, size=size, uploaded_at=time.monotonic())


def fetch_result(pipeline: Pipeline, outcome: Outcome) -> None:
    s3 = boto3.client("s3")
    outcome.result_key = f"{pipeline.result_prefix}{outcome.key}.json"
    try:
        body = s3.get_object(Bucket=pipeline.bucket, Key=outcome.result_key)["Body"].read()
    except ClientError as error:
        if outcome.failure is None:
            outcome.failure = (
                f"result: s3://{pipeline.bucket}/{outcome.result_key} is missing "
                f"({error.response['Error']['Code']})"
            )
        return
    outcome.result = json.loads(body)


def process_batch(
    pipeline: Pipeline,
    runner: Callable[[Any, Any], Any],
    paths: Iterable[Path],
    *,
    endpoint: str,
    docker: bool,
    say: Printer,
    outcomes: list[Outcome] | None = None,
) -> list[Outcome]:
    """Each file in turn: upload, the emulator's event to the runner, the task, its result.

    Outcomes are appended to `outcomes` as they start, so a Ctrl-C in watch mode still
    reports the file it interrupted.
    """
    outcomes = [] if outcomes is None else outcomes
    for path in paths:
        outcome = upload(pipeline, path)
        outcomes.append(outcome)
        say("")
        say(f"upload   s3://{pipeline.bucket}/{outcome.key} ({human_size(outcome.size)})")
        started = dispatch_events(pipeline, runner, {outcome.key: outcome}, say)
        for key, task_arn in started.items():
            if key != outcome.key:  # an event the emulator sent for something else
                say(f"note     the runner also started {task_arn} for {key}")
        if outcome.parked:
            wait_in_backlog(pipeline, runner, outcome, say, time.monotonic() + BURST_SECONDS)
        if outcome.task_arn is not None:
            complete_task(
                pipeline, outcome, outcome.task_arn, endpoint=endpoint, docker=docker, say=say
            )
    return outcomes


def dispatch_events(
    pipeline: Pipeline,
    runner: Callable[[Any, Any], Any],
    outcomes: dict[str, Outcome],
    say: Printer,
) -> dict[str, str]:
    """Hand each S3 event to the runner as Lambda would; returns key -> started task ARN."""
    started: dict[str, str] = {}
    deadline = time.monotonic() + EVENT_WAIT_SECONDS
    for event in receive_events(pipeline.queue_url, len(outcomes), deadline):
        for record in event.get("Records", []):
            key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "?")))
            latency = ""
            if key in outcomes:
                outcomes[key].event_after = time.monotonic() - outcomes[key].uploaded_at
                latency = f" {outcomes[key].event_after:.2f} s after the upload"
            say(f"event    {record.get('eventName', '?')}{latency} → runner (handler.handler)")
        try:
            summary = runner(event, None)
        except Exception as error:  # Lambda would retry it, then dead-letter it
            say(f"runner   raised: {error}")
            for key, outcome in outcomes.items():
                if outcome.task_arn is None and key in str(error):
                    outcome.failure = f"runner: {error}"
            continue
        started |= _apply_summary(summary, outcomes, say)
    for outcome in outcomes.values():
        if outcome.task_arn is None and outcome.failure is None and not outcome.parked:
            outcome.failure = f"event: no task was started for it within {EVENT_WAIT_SECONDS:.0f} s"
    return started


def _apply_summary(
    summary: Mapping[str, Any], outcomes: dict[str, Outcome], say: Printer
) -> dict[str, str]:
    """What the runner said of each upload, onto its outcome; returns key -> started task."""
    for key, reason in summary.get("skipped", {}).items():
        say(f"runner   skipped {key}: {reason}")
        if key in outcomes:
            outcomes[key].failure = f"runner skipped it: {reason}"
    for key, reason in summary.get("parked", {}).items():
        say(f"runner   parked {key}: {reason}")
        if key in outcomes:
            outcomes[key].parked = True
    started: dict[str, str] = dict(summary.get("started", {}))
    for key, task_arn in started.items():
        if key in outcomes:
            outcomes[key].task_arn = task_arn
    return started


def complete_task(
    pipeline: Pipeline,
    outcome: Outcome,
    task_arn: str,
    *,
    endpoint: str,
    docker: bool,
    say: Printer,
) -> None:
    say(f"task     {task_arn}")
    say(f"           S3_KEY={outcome.key}")
    outcome.exit_code, outcome.task_seconds, outcome.log = run_task(
        pipeline, task_arn, endpoint=endpoint, docker=docker, say=say
    )
    say(f"exit     {outcome.exit_code} after {outcome.task_seconds:.2f} s")
    settle_task(pipeline, outcome)
    if outcome.result is not None:
        say(f"result   s3://{pipeline.bucket}/{outcome.result_key}")
        say(_indent(json.dumps(outcome.result, indent=2, ensure_ascii=False)))


def settle_task(pipeline: Pipeline, outcome: Outcome) -> None:
    """After the task exited: a failure naming its exit code and last line, and its result."""
    if outcome.exit_code != 0:
        last = outcome.log[-1] if outcome.log else "(no output)"
        outcome.failure = f"task: exited with code {outcome.exit_code}: {last}"
    fetch_result(pipeline, outcome)


def _indent(text: str) -> str:
    return "\n".join("           " + line for line in text.splitlines())


def results_triggered_nothing(pipeline: Pipeline) -> int:
    """Events seen for keys under the result prefix (there must be none).

    The emulator queues an object's event before its PUT returns, and every result is written
    by now: half a second of listening is a margin, not a guess at a delivery delay.
    """
    triggered = 0
    for event in receive_events(pipeline.queue_url, 1, time.monotonic() + 0.5):
        for record in event.get("Records", []):
            key = unquote_plus(str(record.get("s3", {}).get("object", {}).get("key", "")))
            if key.startswith(pipeline.result_prefix):
                triggered += 1
    return triggered


def sample_files(directory: Path) -> list[Path]:
    """A small generated sample: text with many lines, a name with spaces and unicode, binary."""
    csv = directory / "quarterly report 2026.csv"
    csv.write_text(
        "region,month,revenue\n"
        + "".join(f"r{i % 7},{1 + i % 12},{i * 37 % 1000}\n" for i in range(5000)),
        encoding="utf-8",
    )
    notes = directory / "notes - café ünïcode 🚀.txt"
    notes.write_text("Files with spaces and unicode in their names work too.\n" * 20, "utf-8")
    blob = directory / "sensor-dump.bin"
    blob.write_bytes(os.urandom(3 * 1024 * 1024))
    return [csv, notes, blob]


def summarise(outcomes: list[Outcome], say: Printer) -> int:
    failed = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed)
    say(f"{ok} of {len(outcomes)} uploads processed successfully")
    for outcome in failed:
        say(f"FAILED   {outcome.key}: {outcome.failure or 'no result'}")
    return 0 if not failed else 1


def watch_paths(folder: Path | None, stdin: bool) -> Iterator[list[Path]]:
    """New files dropped into `folder` (once their size is stable), or paths read from stdin."""
    if stdin:
        for line in sys.stdin:
            if line.strip():
                yield [Path(line.strip()).expanduser()]
        return
    assert folder is not None
    seen: dict[Path, tuple[float, int]] = {}
    pending: dict[Path, int] = {}
    while True:
        ready = []
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            stat = path.stat()
            signature = (stat.st_mtime, stat.st_size)
            if seen.get(path) == signature:
                continue
            if pending.get(path) == stat.st_size:  # unchanged for one poll: finished writing
                seen[path] = signature
                del pending[path]
                ready.append(path)
            else:
                pending[path] = stat.st_size
        if ready:
            yield ready
        time.sleep(1.0)


@dataclass
class DemoResult:
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    endpoint: str | None = None


def run(
    files: list[Path],
    *,
    stack: str = "dev",
    docker: bool = False,
    watch: Path | None = None,
    stdin: bool = False,
    burst: int = 0,
    max_tasks: int | None = None,
    say: Printer = print,
) -> int:
    """The demo; returns the process exit code."""
    overrides = {"maxConcurrentTasks": max_tasks} if max_tasks is not None else None
    return run_demo(
        files,
        stack=stack,
        overrides=overrides,
        docker=docker,
        watch=watch,
        stdin=stdin,
        burst=burst,
        say=say,
    ).exit_code


def run_demo(
    files: list[Path],
    *,
    stack: str = "dev",
    overrides: Mapping[str, Any] | None = None,
    docker: bool = False,
    watch: Path | None = None,
    stdin: bool = False,
    burst: int = 0,
    say: Printer = print,
) -> DemoResult:
    """The demo, with what happened to each upload; `overrides` replace stack config values.

    `burst` uploads that many generated files at once instead of one file after another.
    """
    for path in files:
        if not path.is_file():
            say(f"error: {path} is not a file; name files to upload, or none for a sample")
            return DemoResult(2)
    if watch is not None and not watch.is_dir():
        say(f"error: --watch {watch} is not a folder")
        return DemoResult(2)
    try:
        evaluation = evaluate(stack, overrides)
    except (ProgramError, ValueError) as error:
        say(f"error: the Pulumi program failed for stack {stack!r}: {error}")
        return DemoResult(2)

    saved_env = dict(os.environ)
    try:
        with emulator_process() as endpoint, tempfile.TemporaryDirectory() as scratch:
            return _run_on_emulator(
                evaluation,
                endpoint,
                Path(scratch),
                files=files,
                stack=stack,
                docker=docker,
                watch=watch,
                stdin=stdin,
                burst=burst,
                say=say,
            )
    except EmulatorError as error:
        say(f"error: {error}")
        return DemoResult(1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def _run_on_emulator(
    evaluation: Evaluation,
    endpoint: str,
    scratch: Path,
    *,
    files: list[Path],
    stack: str,
    docker: bool,
    watch: Path | None,
    stdin: bool,
    burst: int,
    say: Printer,
) -> DemoResult:
    point_at_emulator(os.environ, endpoint)
    try:
        say(f"emulator   {endpoint} (moto), stack {stack!r} evaluated offline")
        pipeline = provision(evaluation, scratch)
        say(
            f"provision  bucket {pipeline.bucket}, trigger on {pipeline.upload_prefix!r}, "
            f"results under {pipeline.result_prefix!r}"
        )
        say(f"           cluster {pipeline.cluster_arn}")
        say(f"           task definition {pipeline.task_definition_arn}")
        if pipeline.secret_names:
            # The emulator holds none of the user's parameters or secrets; a value exported in
            # this shell reaches the job, as ECS would set it.
            say(
                f"           secrets {', '.join(pipeline.secret_names)}: not read here (the "
                "emulator has none of your parameters); export them to pass values to the job"
            )
        if docker:
            build_image(pipeline, say)
        runner = load_runner(pipeline.runner_env, emit_metric=publish_metric)
        if burst:
            # Imported here: the burst builds on this module's pieces.
            from jobctl.burst import burst_files, run_burst  # noqa: PLC0415

            outcomes = run_burst(
                pipeline,
                runner,
                burst_files(scratch, burst),
                endpoint=endpoint,
                docker=docker,
                say=say,
                cap=int(pipeline.outputs.get("maxConcurrentTasks") or 0),
            )
            say("")
            for line in status.read_status(pipeline.outputs).lines():
                say(f"status   {line}")
        elif watch is not None or stdin:
            outcomes = _watch(
                pipeline,
                runner,
                endpoint=endpoint,
                docker=docker,
                folder=watch,
                stdin=stdin,
                say=say,
            )
        else:
            if not files:
                files = sample_files(scratch)
                say(f"\nno files given: uploading a generated sample of {len(files)} files")
            outcomes = process_batch(
                pipeline, runner, files, endpoint=endpoint, docker=docker, say=say
            )
        triggered = results_triggered_nothing(pipeline)
        if triggered:
            for outcome in outcomes:
                outcome.failure = outcome.failure or "a result object started another run"
        say("")
        say(
            f"loop     results under {pipeline.result_prefix!r} started {triggered} runs "
            "(the upload filter excludes them)"
        )
        return DemoResult(summarise(outcomes, say), outcomes, endpoint)
    except DemoError as error:
        say(f"error: {error}")
        return DemoResult(1, endpoint=endpoint)


def _watch(
    pipeline: Pipeline,
    runner: Callable[[Any, Any], Any],
    *,
    endpoint: str,
    docker: bool,
    folder: Path | None,
    stdin: bool,
    say: Printer,
) -> list[Outcome]:
    source = "paths from stdin" if stdin else f"new files in {folder}"
    say(f"watching {source}; Ctrl-C to stop (the emulator stays up at {endpoint})")
    say(
        f"           see where uploads are: python -m jobctl status --endpoint-url {endpoint} "
        f"--stack <stack>"
    )
    outcomes: list[Outcome] = []
    try:
        for batch in watch_paths(folder, stdin):
            existing = [p for p in batch if p.is_file()]
            for missing in set(batch) - set(existing):
                say(f"skipped  {missing}: not a file")
            if existing:
                process_batch(
                    pipeline,
                    runner,
                    existing,
                    endpoint=endpoint,
                    docker=docker,
                    say=say,
                    outcomes=outcomes,
                )
    except KeyboardInterrupt:
        say("stopped")
    return outcomes
