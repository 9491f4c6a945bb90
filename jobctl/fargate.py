"""Fargate's part, and EventBridge's when a task stops.

Every task ECS (the emulator) lists as running is run here, as Fargate would run it: `python
-m task` (or the real image, with --docker) with the task definition's environment and exactly
the overrides the runner sent. Its output goes where the awslogs driver would put it (the job's
log group, stream <prefix>/<container>/<task id>). When the process exits, the task is marked
stopped in the emulator (StopTask) and the "ECS Task State Change" event EventBridge would
deliver for it, built from DescribeTasks with the real exit code, goes to the runner.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from jobctl.emulator import emulator_environment
from jobctl.evaluate import ACCOUNT_ID, PROJECT_DIR, REGION
from jobctl.pipeline import DemoError, Printer, TaskRun, human_size
from jobctl.provision import Pipeline
from jobctl.runner import Runner

DOCKER_IMAGE = "s3-fargate-jobs-task:local"
LOCAL_TASK_SLOTS = 8  # processes run at once on this machine; more tasks wait their turn here
DESCRIBE_TASKS_PAGE = 100  # DescribeTasks's limit
# ECS's own words in a stopped task's stoppedReason (ECS developer guide, stopped task errors).
EXITED_REASON = "Essential container in task exited"
SPOT_REASON = "Your Spot Task was interrupted."
SIGTERM_EXIT = 128 + signal.SIGTERM  # what Docker, and so ECS, reports for a SIGTERM-ed job


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


def describe_log_line(line: str) -> str:
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


def is_start_line(line: str) -> bool:
    """The job's first line once it handles SIGTERM and has begun reading the object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("event") == "start"


def iso(epoch: float) -> str:
    """A time as ECS writes it in its events."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """DescribeTasks's answer as an event carries it: datetimes as ISO strings."""
    if isinstance(value, datetime.datetime):
        return iso(value.timestamp())
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def stopped_event(
    described: Mapping[str, Any],
    *,
    container: str,
    exit_code: int,
    stop_code: str,
    reason: str,
    started_at: float,
    stopped_at: float,
) -> dict[str, Any]:
    """The "ECS Task State Change" event for a stopped task, from its DescribeTasks entry and
    what Fargate knows that the emulator does not: the exit code, the stop code, the times."""
    detail = _json_safe(dict(described))
    containers = [c for c in detail.get("containers") or [] if c.get("name") == container]
    ours = containers[0] if containers else {"name": container}
    ours |= {"lastStatus": "STOPPED", "exitCode": exit_code}
    detail |= {
        "lastStatus": "STOPPED",
        "desiredStatus": "STOPPED",
        "stopCode": stop_code,
        "stoppedReason": reason,
        "startedAt": iso(started_at),
        "stoppingAt": iso(stopped_at),
        "stoppedAt": iso(stopped_at),
        "containers": [ours],
    }
    detail.setdefault("createdAt", iso(started_at))
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": ACCOUNT_ID,
        "time": iso(stopped_at),
        "region": REGION,
        "resources": [detail["taskArn"]],
        "detail": detail,
    }


def environment_of(task: Mapping[str, Any], container: str) -> dict[str, str]:
    """A task's container overrides' environment, name -> value."""
    return {
        item["name"]: item["value"]
        for override in (task.get("overrides") or {}).get("containerOverrides", [])
        if override.get("name") == container
        for item in override.get("environment", [])
    }


@dataclass
class Running:
    """A task's process here, and what it printed (each line with its time, for the logs)."""

    run: TaskRun
    key: str
    environment: Mapping[str, str]
    process: subprocess.Popen[str] | None = None
    started: float = 0.0  # monotonic, for its duration
    started_at: float = 0.0  # epoch, for ECS's startedAt
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None
    stopped_by_ecs: str | None = None  # StopTask's reason, when the runner stopped it (a timeout)


@dataclass(frozen=True)
class Stopped:
    """A task that stopped, and what the runner answered to its state change."""

    running: Running
    answer: Mapping[str, Any]


LineHook = Callable[[Running, str], None]


class Fargate:
    """Runs every task ECS started; reports each stop as EventBridge would. Not thread-safe:
    one loop calls `step`; only the output readers run on their own threads."""

    def __init__(
        self,
        pipeline: Pipeline,
        runner: Runner,
        *,
        endpoint: str,
        docker: bool,
        slots: int = LOCAL_TASK_SLOTS,
        on_line: LineHook | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.runner = runner
        self.endpoint = endpoint
        self.docker = docker
        self.slots = slots
        self.on_line = on_line
        self.known: set[str] = set()
        self.queued: deque[Running] = deque()
        self.running: dict[str, Running] = {}
        self.listed = 0  # tasks ECS listed as running at the last look
        self.ecs = boto3.client("ecs")
        self.logs = boto3.client("logs")

    @property
    def busy(self) -> int:
        """Tasks started and not yet stopped: running here, or waiting for a local slot."""
        return len(self.running) + len(self.queued)

    def busy_with(self, key: str) -> bool:
        return any(r.key == key for r in (*self.running.values(), *self.queued))

    def step(self) -> tuple[list[Running], list[Stopped]]:
        """Reap what exited (each stop reported), find what ECS started, start what fits."""
        stopped = self._reap()
        self._discover()
        return self._launch(), stopped

    def interrupt(self, running: Running) -> None:
        """Stop the task as Spot reclaims one: SIGTERM, then it stops with SpotInterruption."""
        if running.process is not None and running.process.poll() is None:
            running.run.interrupted = True
            running.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Kill what still runs (the demo is ending)."""
        for running in self.running.values():
            if running.process is not None and running.process.poll() is None:
                running.process.kill()
                running.process.wait()
        self.running.clear()
        self.queued.clear()

    # --- ECS's side ---------------------------------------------------------------------------

    def _discover(self) -> None:
        cluster = self.pipeline.cluster_arn
        arns: list[str] = []
        for page in self.ecs.get_paginator("list_tasks").paginate(
            cluster=cluster, desiredStatus="RUNNING"
        ):
            arns += page.get("taskArns", [])
        self.listed = len(arns)
        for arn in set(self.running) - set(arns):
            self._stopped_by_ecs(self.running[arn])
        new = [arn for arn in arns if arn not in self.known]
        for start in range(0, len(new), DESCRIBE_TASKS_PAGE):
            answer = self.ecs.describe_tasks(
                cluster=cluster, tasks=new[start : start + DESCRIBE_TASKS_PAGE]
            )
            for task in answer.get("tasks", []):
                env = environment_of(task, self.pipeline.container_name)
                self.known.add(task["taskArn"])
                attempt = env.get("JOB_ATTEMPT", "1")
                run = TaskRun(task["taskArn"], int(attempt) if attempt.isdigit() else 1)
                self.queued.append(Running(run, env.get("S3_KEY", "?"), env))

    def _stopped_by_ecs(self, running: Running) -> None:
        """ECS no longer runs a task whose process does (the runner's sweep stopped it for
        running too long): SIGTERM it, as ECS does, and report the stop as ECS's."""
        if running.stopped_by_ecs is not None or running.process is None:
            return
        (described,) = self.ecs.describe_tasks(
            cluster=self.pipeline.cluster_arn, tasks=[running.run.task_arn]
        )["tasks"]
        running.stopped_by_ecs = str(described.get("stoppedReason") or "Task stopped by user")
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)

    def _launch(self) -> list[Running]:
        launched = []
        while self.queued and len(self.running) < self.slots:
            running = self.queued.popleft()
            self._start(running)
            self.running[running.run.task_arn] = running
            launched.append(running)
        return launched

    def _start(self, running: Running) -> None:
        """Run the task as Fargate would: the task definition's environment, the overrides."""
        task_env = {**self.pipeline.container_env, **running.environment}
        env = emulator_environment(self.endpoint, {**os.environ, **task_env})
        running.started = time.monotonic()
        running.started_at = time.time()
        running.process = subprocess.Popen(
            task_command(
                self.pipeline, {**task_env, **emulator_environment(self.endpoint, {})}, self.docker
            ),
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        running.reader = threading.Thread(target=self._read, args=(running,), daemon=True)
        running.reader.start()

    def _read(self, running: Running) -> None:
        assert running.process is not None
        assert running.process.stdout is not None
        for line in running.process.stdout:
            text = line.rstrip("\n")
            running.lines.append((time.time(), text))
            if self.on_line is not None:
                self.on_line(running, text)

    def _reap(self) -> list[Stopped]:
        stopped = []
        for arn, running in list(self.running.items()):
            assert running.process is not None
            code = running.process.poll()
            if code is None:
                continue
            del self.running[arn]
            if running.reader is not None:
                running.reader.join(timeout=5)  # the rest of its output
            # A signal that ended the process is reported as Docker reports it: 128 + signal.
            exit_code = code if code >= 0 else 128 - code
            run = running.run
            run.exit_code = exit_code
            run.seconds = time.monotonic() - running.started
            run.log = [text for _, text in running.lines]
            self._write_logs(running)
            stopped.append(Stopped(running, self._report_stop(running, exit_code)))
        return stopped

    def _write_logs(self, running: Running) -> None:
        """The job's output where the awslogs driver writes it, so the log commands work."""
        if not running.lines or not self.pipeline.log_group:
            return
        stream = "/".join(
            (
                self.pipeline.log_stream_prefix,
                self.pipeline.container_name,
                running.run.task_arn.rsplit("/", 1)[-1],
            )
        )
        self.logs.create_log_stream(logGroupName=self.pipeline.log_group, logStreamName=stream)
        self.logs.put_log_events(
            logGroupName=self.pipeline.log_group,
            logStreamName=stream,
            logEvents=[
                {"timestamp": int(at * 1000), "message": text or " "} for at, text in running.lines
            ],
        )

    def _report_stop(self, running: Running, exit_code: int) -> Mapping[str, Any]:
        """Mark the task stopped in the emulator and hand the runner EventBridge's event."""
        run = running.run
        cluster = self.pipeline.cluster_arn
        if running.stopped_by_ecs is not None:
            run.stop_code, reason = "UserInitiated", running.stopped_by_ecs
        else:
            spot = run.interrupted and exit_code == SIGTERM_EXIT
            run.stop_code = "SpotInterruption" if spot else "EssentialContainerExited"
            reason = SPOT_REASON if spot else EXITED_REASON
            self.ecs.stop_task(cluster=cluster, task=run.task_arn, reason=reason)
        (described,) = self.ecs.describe_tasks(cluster=cluster, tasks=[run.task_arn])["tasks"]
        event = stopped_event(
            described,
            container=self.pipeline.container_name,
            exit_code=exit_code,
            stop_code=run.stop_code,
            reason=reason,
            started_at=running.started_at,
            stopped_at=time.time(),
        )
        if not self.pipeline.rules.deliver(event):
            raise DemoError(
                f"no EventBridge rule the program declares for the runner matches the stop of "
                f"task {run.task_arn} (its patterns: {list(self.pipeline.rules.patterns)}): the "
                "runner would never hear of it, and its slot stay taken until the sweep"
            )
        try:
            answer: Mapping[str, Any] = self.runner(event, None)
        except Exception as error:  # EventBridge retries; the sweep settles it otherwise
            return {"outcome": "raised", "error": str(error)}
        return answer
