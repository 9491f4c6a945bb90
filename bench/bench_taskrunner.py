"""Benchmark of the runner Lambda: cold start against bare boto3, and the runner's own time per
record (and per task stop, per sweep) beyond the AWS calls it makes.

Prints figures; asserts nothing (a benchmark, not a timed test). No call leaves the machine:
ECS is the fake endpoint from tests/fakes (clientToken, task lives, StopTask, DescribeTasks) on
127.0.0.1, DynamoDB and SQS are moto's server in a child process, with the job table created as
the program declares it (tests/fakes/job_table.py). Every AWS call the runner makes is timed
where boto3 makes it; what is left of an event's time is the runner's own work (parsing, the
job record's codec and transitions, the scheduler, logs and metric lines). Targets carried over
from issue 11: the handler adds at most 10 % to the cold start of `import boto3;
boto3.client("ecs")`, and at most 1 ms of its own per record. The cold starts run as Lambda runs
them: on the runtime's Python version (`--lambda-python`), from the package laid out read-only as
the program ships it (with its bytecode, infra/runner_package.py), and for comparison from the
sources alone, which Lambda then compiles at every cold start.

    venv/bin/python bench/bench_taskrunner.py [--runs 7] [--records 25] [--lambda-python PY]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import boto3

PROJECT_DIR = Path(__file__).resolve().parents[1]
TASKRUNNER_DIR = PROJECT_DIR / "taskrunner"
sys.path[:0] = [str(PROJECT_DIR), str(TASKRUNNER_DIR)]

from dispatch import route  # noqa: E402 - the Lambda's modules are top-level
from runner_settings import RunnerSettings, load_settings  # noqa: E402
from services import Services  # noqa: E402

from infra.runner_package import compile_modules  # noqa: E402
from jobctl.emulator import emulator_process  # noqa: E402
from jobctl.runner import SWEEP_EVENT  # noqa: E402
from tests.fakes.fake_ecs import FakeEcs, running_fake_ecs  # noqa: E402
from tests.fakes.job_table import create_job_table  # noqa: E402

RUNNER_ENV = {
    "CLUSTER_ARN": "arn:aws:ecs:us-east-1:123456789012:cluster/jobs",
    "TASK_DEFINITION_ARN": "arn:aws:ecs:us-east-1:123456789012:task-definition/job:1",
    "CONTAINER_NAME": "job",
    "SUBNETS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "SECURITY_GROUPS": "sg-0123abcd",
    "ASSIGN_PUBLIC_IP": "DISABLED",
    "CAPACITY_PROVIDER": "FARGATE",
    "RESULT_PREFIX": "results/",
    "MAX_CONCURRENT_TASKS": "0",
    "JOB_LOG_GROUP": "/jobs/job",
}
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # a dummy credential for the local endpoints
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

# Each child measures from its first statement, so interpreter start-up is left out of all.
BARE_COLD_START = """
import time; started = time.perf_counter()
import boto3
boto3.client("ecs")
print(time.perf_counter() - started)
"""
BARE_CLIENTS = """
import time; started = time.perf_counter()
import boto3
boto3.client("ecs"); boto3.client("dynamodb")
print(time.perf_counter() - started)
"""
# The handler's import (settings, the ECS client), then its first upload event; the event's AWS
# calls timed from botocore's before-call to after-call, to tell them from the runner's own work.
HANDLER_COLD_START = """
import json, sys, time; started = time.perf_counter()
import boto3
aws = [0.0]
def before(**_): aws.append(time.perf_counter())
def after(**_): aws[0] += time.perf_counter() - aws.pop()
boto3.setup_default_session()
boto3.DEFAULT_SESSION.events.register("before-call", before)
boto3.DEFAULT_SESSION.events.register("after-call", after)
sys.path.insert(0, sys.argv[2])
import handler
imported = time.perf_counter() - started
summary = handler.handler(json.loads(sys.argv[1]), None)
assert summary["started"], summary
print(imported, time.perf_counter() - started, aws[0])
"""


def s3_record(key: str) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-06T14:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "uploads-bucket"},
            "object": {
                "key": key,
                "size": 79270,
                "eTag": "0123456789abcdef0123456789abcdef",
                "sequencer": uuid.uuid4().hex[:16].upper(),
            },
        },
    }


def upload_event(records: int) -> dict[str, Any]:
    """An S3 event of new uploads (fresh keys: a repeated key would be a duplicate delivery)."""
    batch = uuid.uuid4().hex[:8]
    return {
        "Records": [s3_record(f"uploads/{batch}/report+{n}+%C3%BC.csv") for n in range(records)]
    }


# --- the world -------------------------------------------------------------------------------


@dataclass
class World:
    env: dict[str, str]  # the runner's, and boto3's endpoints
    settings: RunnerSettings
    ecs: FakeEcs
    moto_url: str


@contextmanager
def local_aws() -> Iterator[World]:
    """The fake ECS and moto's server, with the job table and the runner's queues."""
    with running_fake_ecs() as ecs, emulator_process() as moto_url:
        env = {
            **DUMMY_AWS,
            "AWS_ENDPOINT_URL_ECS": ecs.url,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
            "AWS_ENDPOINT_URL_SQS": moto_url,
        }
        os.environ.update(env)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        sqs = boto3.client("sqs")
        queues = {
            variable: sqs.create_queue(QueueName=name)["QueueUrl"]
            for variable, name in (
                ("BACKLOG_QUEUE_URL", "jobs-backlog"),
                ("DEAD_LETTER_QUEUE_URL", "jobs-dlq"),
                ("FAILED_JOBS_QUEUE_URL", "jobs-failed-jobs"),
            )
        }
        table = create_job_table(boto3.client("dynamodb"), "jobs-state")
        runner_env = {**RUNNER_ENV, **queues, "STATE_TABLE": table}
        yield World({**env, **runner_env}, load_settings(runner_env), ecs, moto_url)


# --- cold start --------------------------------------------------------------------------------


def child_seconds(python: str, script: str, env: dict[str, str], *args: str) -> list[float]:
    done = subprocess.run(
        [python, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} failed: {done.stderr.strip()}")
    return [float(figure) for figure in done.stdout.strip().splitlines()[-1].split()]


COLD = ("bare", "bare clients", "handler import", "handler first event", "its AWS calls")
PACKAGES = ("with bytecode", "sources only")


def python_version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def lambda_packages(python: str, folder: Path) -> dict[str, Path]:
    """The runner's package laid out as Lambda unpacks it: with the bytecode the program ships
    (compiled by `python`, infra/runner_package.py), and as sources only."""
    modules = sorted(TASKRUNNER_DIR.glob("*.py"))
    bytecode = compile_modules(modules, python, f"python{python_version(python)}")
    packages = {label: folder / label.replace(" ", "-") for label in PACKAGES}
    for label, root in packages.items():
        (root / "__pycache__").mkdir(parents=True)
        for module in modules:
            shutil.copyfile(module, root / module.name)
        if label == "with bytecode":
            for name, path in bytecode.items():
                shutil.copyfile(path, root / name)
    return packages


def cold_starts(
    world: World, runs: int, python: str, packages: dict[str, Path]
) -> dict[str, dict[str, list[float]]]:
    # /var/task is read-only: Python keeps nothing it compiles there.
    env = {**os.environ, **world.env, "PYTHONDONTWRITEBYTECODE": "1"}
    times: dict[str, dict[str, list[float]]] = {
        label: {name: [] for name in COLD} for label in packages
    }
    for _ in range(runs):  # interleaved, so drift in machine load hits all alike
        bare = child_seconds(python, BARE_COLD_START, env)
        clients = child_seconds(python, BARE_CLIENTS, env)
        for label, root in packages.items():
            event = json.dumps(upload_event(1))  # a new upload each time: a repeat is skipped
            imported, total, aws = child_seconds(python, HANDLER_COLD_START, env, event, str(root))
            for name, value in zip(COLD, (*bare, *clients, imported, total, aws), strict=True):
                times[label][name].append(value)
    return times


# --- the runner's own time ---------------------------------------------------------------------


@dataclass
class Clock:
    """AWS calls timed where boto3 makes them: seconds and count by operation."""

    seconds: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)


class Timed:
    """A boto3 client whose every API call is timed into a Clock."""

    def __init__(self, client: Any, clock: Clock, service: str) -> None:
        self._client = client
        self._clock = clock
        self._service = service

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name.startswith("_") or name in ("get_paginator", "meta"):
            return method

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._clock.seconds += time.perf_counter() - started
                self._clock.calls[f"{self._service}.{name}"] += 1

        return timed


@dataclass(frozen=True)
class Measure:
    """One event kind's figures: per item, the whole, the AWS calls, the runner's own."""

    items: int
    total: float
    aws: float
    calls: Counter[str]

    @property
    def own(self) -> float:
        return self.total - self.aws


def timed_services(clock: Clock, metrics: io.StringIO) -> Services:
    def emit(line: str) -> None:
        metrics.write(line + "\n")  # Lambda writes it to stdout

    return Services(
        cast("Any", Timed(boto3.client("ecs"), clock, "ecs")),
        sqs=cast("Any", Timed(boto3.client("sqs"), clock, "sqs")),
        dynamodb=cast("Any", Timed(boto3.client("dynamodb"), clock, "dynamodb")),
        emit_metric=emit,
    )


def measure(run: Callable[[], object], items: int, clock: Clock) -> Measure:
    before_seconds, before_calls = clock.seconds, Counter(clock.calls)
    started = time.perf_counter()
    run()
    total = time.perf_counter() - started
    return Measure(items, total, clock.seconds - before_seconds, clock.calls - before_calls)


def one_round(world: World, records: int) -> tuple[Measure, Measure, Measure]:
    """An upload event of `records` new uploads; the stop of each task it started; a sweep."""
    clock = Clock()
    services = timed_services(clock, io.StringIO())
    settings = world.settings
    event = upload_event(records)
    summaries: list[Any] = []
    uploads = measure(lambda: summaries.append(route(event, settings, services)), records, clock)
    started = list(summaries[0]["started"].values())
    stop_events = []
    for arn in started:
        world.ecs.run(arn)
        world.ecs.finish(arn, exit_code=0)
        stop_events.append(world.ecs.state_change(arn))
    stops = measure(
        lambda: [route(stop, settings, services) for stop in stop_events], len(started), clock
    )
    # A sweep with a minute's work: as many tasks under way as the upload event started.
    again = upload_event(records)
    route(again, settings, services)
    sweep = measure(lambda: route(dict(SWEEP_EVENT), settings, services), 1, clock)
    for task in world.ecs.tasks:  # leave nothing under way for the next round
        world.ecs.finish(task["taskArn"], exit_code=0)
    route(dict(SWEEP_EVENT), settings, services)
    return uploads, stops, sweep


def per_item_us(values: list[Measure], attribute: str) -> float:
    return float(min(getattr(m, attribute) / m.items for m in values) * 1e6)


def report(name: str, rounds: list[Measure], per: str) -> None:
    best = min(rounds, key=lambda m: m.own / m.items)
    calls = ", ".join(
        f"{operation} {count / best.items:.2g}" for operation, count in sorted(best.calls.items())
    )
    print(
        f"  {name:<22} {per_item_us(rounds, 'total'):9.0f} us per {per}, of which AWS calls "
        f"{per_item_us(rounds, 'aws'):7.0f} us and the runner's own "
        f"{per_item_us(rounds, 'own'):6.0f} us"
    )
    print(f"  {'':<22} calls per {per}: {calls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold starts and rounds of each kind")
    # A fill stops after scheduler.FILL_SECONDS; at moto's pace (tens of ms a call, four calls a
    # start) an event of more records than this leaves the rest waiting for the next fill.
    parser.add_argument("--records", type=int, default=25, help="records per upload event")
    parser.add_argument(
        "--lambda-python",
        default=sys.executable,
        help="a Python of the Lambda's runtime version, with boto3 (make bench: venv-task's)",
    )
    options = parser.parse_args()
    # Lambda writes every log line; so does the benchmark, to memory.
    log = logging.getLogger("taskrunner")
    log.addHandler(logging.StreamHandler(io.StringIO()))
    log.setLevel(logging.INFO)
    log.propagate = False

    with local_aws() as world:
        load, python = os.getloadavg()[0], sys.version.split()[0]
        print(f"machine: {os.cpu_count()} cores, load average {load:.2f}, Python {python}")
        with tempfile.TemporaryDirectory() as folder:
            packages = lambda_packages(options.lambda_python, Path(folder))
            times = cold_starts(world, options.runs, options.lambda_python, packages)
        print(
            f"cold start on Python {python_version(options.lambda_python)} (the Lambda's runtime: "
            "--lambda-python), the package as Lambda unpacks it (read-only), median of "
            f"{options.runs}, from the first statement (no interpreter start):"
        )
        for label in PACKAGES:
            bare, clients, imported, first, aws = (
                statistics.median(times[label][name]) for name in COLD
            )
            own = first - aws
            if label == PACKAGES[0]:
                print(f"  import boto3 + client('ecs')                    {bare * 1000:8.1f} ms")
                print(f"  import boto3 + clients ecs, dynamodb            {clients * 1000:8.1f} ms")
            print(f"  the runner's package {label}:")
            print(f"    handler: import (settings, ECS client)        {imported * 1000:8.1f} ms")
            print(
                f"    handler: import + first upload event          {first * 1000:8.1f} ms, of "
                f"which AWS calls {aws * 1000:.1f} ms (moto's DynamoDB is slow)"
            )
            target = "   (target <= +10 %)" if label == PACKAGES[0] else ""
            print(
                "    handler's import vs bare import+client:"
                f"{(imported / bare - 1) * 100:+13.1f} %{target}"
            )
            print(
                f"    handler's own cold start (all but AWS calls)  {own * 1000:8.1f} ms = "
                f"{(own / clients - 1) * 100:+.1f} % on bare import + both clients"
            )

        rounds = [one_round(world, options.records) for _ in range(options.runs)]
        print(
            f"per item, best of {options.runs} rounds, over HTTP to the local fake ECS and "
            "moto's DynamoDB and SQS:"
        )
        report(f"upload ({options.records}/event)", [r[0] for r in rounds], "record")
        report("task stop event", [r[1] for r in rounds], "event")
        report(f"sweep ({options.records} under way)", [r[2] for r in rounds], "sweep")
        print("  target: the runner's own time per record <= 1000 us")


if __name__ == "__main__":
    main()
