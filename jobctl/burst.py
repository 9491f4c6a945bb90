"""A burst of uploads at once: watch them wait in the backlog and drain as tasks finish.

Every file is uploaded first; the emulator's events go to the runner, which starts what the
cap (`--max-tasks`) lets start and parks the rest. Then, until every upload has its result,
this plays the parts of AWS the emulator lacks: Fargate (each task ECS started runs as
`python -m task`, and is marked stopped when it exits) and the backlog's event source mapping
(batches handed to the runner). A line shows the backlog, the tasks and the results whenever
they change.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3

from jobctl.demo import (
    BURST_SECONDS,
    LOCAL_TASK_SLOTS,
    POLL_SECONDS,
    Outcome,
    Pipeline,
    Printer,
    dispatch_events,
    mark_stopped,
    poll_backlog,
    settle_task,
    start_task_process,
    tasks_started_for,
    upload,
)
from jobctl.status import queue_depth

Runner = Callable[[Any, Any], Any]


def burst_files(directory: Path, count: int) -> list[Path]:
    """`count` small CSV files, each different."""
    files = []
    for number in range(count):
        path = directory / f"burst {number + 1:03d}.csv"
        path.write_text(
            "n,square\n" + "".join(f"{n},{n * n}\n" for n in range(number * 50)), "utf-8"
        )
        files.append(path)
    return files


@dataclass
class Running:
    outcome: Outcome
    process: subprocess.Popen[str]
    output: IO[str]
    started: float


@dataclass
class Fargate:
    """The tasks ECS started, run here; at most LOCAL_TASK_SLOTS processes at a time."""

    pipeline: Pipeline
    endpoint: str
    docker: bool
    waiting: deque[Outcome] = field(default_factory=deque)
    running: list[Running] = field(default_factory=list)

    def launch(self, outcome: Outcome) -> None:
        self.waiting.append(outcome)

    def step(self) -> list[Outcome]:
        """Start what fits, reap what exited (stopped in ECS, result fetched); the reaped."""
        finished = []
        for task in list(self.running):
            code = task.process.poll()
            if code is None:
                continue
            self.running.remove(task)
            task.output.seek(0)
            outcome = task.outcome
            outcome.log = task.output.read().splitlines()
            task.output.close()
            outcome.exit_code, outcome.task_seconds = code, time.monotonic() - task.started
            assert outcome.task_arn is not None
            mark_stopped(self.pipeline, outcome.task_arn, code)
            settle_task(self.pipeline, outcome)
            finished.append(outcome)
        while self.waiting and len(self.running) < LOCAL_TASK_SLOTS:
            outcome = self.waiting.popleft()
            assert outcome.task_arn is not None
            output = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed when reaped
            process = start_task_process(
                self.pipeline,
                outcome.task_arn,
                endpoint=self.endpoint,
                docker=self.docker,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            self.running.append(Running(outcome, process, output, time.monotonic()))
        return finished

    def stop(self) -> None:
        for task in self.running:
            task.process.kill()
            task.process.wait()
            task.output.close()
        self.running.clear()


def run_burst(
    pipeline: Pipeline,
    runner: Runner,
    files: list[Path],
    *,
    endpoint: str,
    docker: bool,
    say: Printer,
    cap: int,
) -> list[Outcome]:
    """Upload every file at once, then run and drain until each has its result."""
    limit = f"at most {cap} tasks at once" if cap else "as many tasks as the account allows"
    say(f"\nburst    {len(files)} uploads at once; the runner starts {limit}")
    outcomes = {}
    for path in files:
        outcome = upload(pipeline, path)
        outcomes[outcome.key] = outcome
    quiet: list[str] = []  # the per-event lines of a burst would drown the picture
    dispatch_events(pipeline, runner, outcomes, quiet.append)
    fargate = Fargate(pipeline, endpoint, docker)
    launched: set[str] = set()
    done: set[str] = set()
    shown = ""
    deadline = time.monotonic() + BURST_SECONDS
    try:
        while len(done) < len(outcomes) and time.monotonic() < deadline:
            waiting = {key for key, o in outcomes.items() if o.task_arn is None and o.parked}
            for key, task_arn in tasks_started_for(pipeline, waiting).items():
                outcomes[key].task_arn = task_arn
            for key, outcome in outcomes.items():
                if outcome.task_arn is not None and key not in launched:
                    launched.add(key)
                    fargate.launch(outcome)
                elif outcome.task_arn is None and not outcome.parked and key not in done:
                    done.add(key)  # the runner failed or skipped it: nothing will come
            done.update(outcome.key for outcome in fargate.step())
            poll_backlog(pipeline, runner, say)
            line = _picture(pipeline, fargate, len(done), len(outcomes))
            if line != shown:
                say(line)
                shown = line
            time.sleep(POLL_SECONDS)
    finally:
        fargate.stop()
    for outcome in outcomes.values():
        if outcome.key not in done and outcome.failure is None:
            outcome.failure = f"burst: not finished within {BURST_SECONDS:.0f} s"
    return list(outcomes.values())


def _picture(pipeline: Pipeline, fargate: Fargate, done: int, total: int) -> str:
    waiting = queue_depth(boto3.client("sqs"), pipeline.backlog_url)
    running = len(fargate.running) + len(fargate.waiting)
    return (
        f"backlog  {waiting:3d} waiting   tasks {running:3d} running   results {done:3d} of {total}"
    )
