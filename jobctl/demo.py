"""`jobctl demo`: the whole pipeline on this machine: S3 upload -> event -> runner -> task ->
task-stop event -> runner -> result.

Nothing here is a second copy of the infrastructure: the emulator is provisioned from what the
Pulumi program declares for the chosen stack (evaluated offline, provision.py), the real runner
handler gets the emulator's own S3 events, every task ECS started runs here as Fargate would
run it (fargate.py), and each stop reaches the runner as EventBridge would deliver it. Files
are uploaded one after another (or, with --burst, all at once: burst.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from jobctl import burst as burst_mode
from jobctl.emulator import (
    EmulatorError,
    emulator_process,
    hold_tasks_running,
    point_at_emulator,
)
from jobctl.evaluate import Evaluation, ProgramError, evaluate
from jobctl.fargate import Fargate, build_image, describe_log_line
from jobctl.pipeline import (
    POLL_SECONDS,
    SWEEP_SECONDS,
    DemoError,
    Outcome,
    Printer,
    Sweeper,
    dispatch_events,
    human_size,
    indent,
    latest_job,
    poll_backlog,
    publish_metric,
    results_triggered_nothing,
    sample_files,
    settle,
    upload,
)
from jobctl.provision import Pipeline, ProvisionError, provision
from jobctl.runner import load_runner
from jobctl.session import (
    Demo,
    announce_stop,
    announce_task,
    locked,
    show_upload,
    summarise,
)

FOLLOW_SECONDS = 30 * 60.0  # bounds one upload's wait (the dev stack's task timeout)
TICK_SECONDS = 2.0  # a line while a task runs silently, so a person sees it is alive


@dataclass
class DemoResult:
    exit_code: int
    outcomes: list[Outcome] = field(default_factory=list)
    endpoint: str | None = None


# --- one upload after another -------------------------------------------------------------------


def follow(demo: Demo, outcome: Outcome) -> None:
    """Run what ECS starts for the upload until its job ends (through any retries)."""
    outcomes = {outcome.key: outcome}
    deadline = time.monotonic() + FOLLOW_SECONDS
    tick = time.monotonic() + TICK_SECONDS
    store = demo.runner.store
    while time.monotonic() < deadline:
        launched, stopped = demo.fargate.step()
        for running in launched:
            announce_task(demo, running, outcomes)
            tick = time.monotonic() + TICK_SECONDS
        for done in stopped:
            announce_stop(demo, done)
        if outcome.parked:
            poll_backlog(demo.pipeline, demo.runner, demo.say)
        outcome.job = latest_job(store, demo.pipeline, outcome.key)
        if outcome.settled and not demo.fargate.busy_with(outcome.key):
            break
        if outcome.job is not None and outcome.job.state == "waiting":
            demo.sweeper.due()  # a retry's delay, or a slot the events did not fill
        for running in demo.fargate.running.values():
            if time.monotonic() >= tick:
                demo.say(f"           │ … running for {time.monotonic() - running.started:.0f} s")
                tick = time.monotonic() + TICK_SECONDS
        demo.pause(POLL_SECONDS)
    else:
        outcome.failure = f"its job had not ended after {FOLLOW_SECONDS / 60:.0f} min"
    settle(demo.pipeline, outcome)
    if outcome.result is not None:
        demo.say(f"result   s3://{demo.pipeline.bucket}/{outcome.result_key}")
        demo.say(indent(json.dumps(outcome.result, indent=2, ensure_ascii=False)))


def process_batch(
    demo: Demo, paths: list[Path], outcomes: list[Outcome] | None = None
) -> list[Outcome]:
    """Each file in turn: upload, the emulator's event to the runner, its job to the end.

    Outcomes are appended to `outcomes` as they start, so a Ctrl-C in watch mode still
    reports the file it interrupted.
    """
    outcomes = [] if outcomes is None else outcomes
    for path in paths:
        if demo.stopping.is_set():
            raise KeyboardInterrupt
        outcome = upload(demo.pipeline, path)
        outcomes.append(outcome)
        demo.say("")
        demo.say(f"upload   s3://{demo.pipeline.bucket}/{outcome.key} ({human_size(outcome.size)})")
        dispatch_events(demo.pipeline, demo.runner, {outcome.key: outcome}, demo.say)
        if outcome.failure is None:
            follow(demo, outcome)
    return outcomes


# --- watching a folder, or stdin ------------------------------------------------------------------


def watch_paths(
    folder: Path | None,
    stdin: bool,
    pause: Callable[[float], None] = time.sleep,
    reading: threading.Event | None = None,
) -> Iterator[list[Path]]:
    """New files dropped into `folder` (once their size is stable), or paths read from stdin;
    an empty list each second nothing new came (the caller's moment to sweep). `reading` is
    set while the wait is for stdin, where only an exception ends it."""
    reading = reading or threading.Event()
    if stdin:
        while True:
            reading.set()
            try:
                line = sys.stdin.readline()
            finally:
                reading.clear()
            if not line:
                return
            if line.strip():
                yield [Path(line.strip()).expanduser()]
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
        yield ready
        pause(1.0)


def _watch(demo: Demo, folder: Path | None, stdin: bool) -> list[Outcome]:
    source = "paths from stdin" if stdin else f"new files in {folder}"
    demo.say(f"watching {source}; Ctrl-C to stop (the emulator stays up at {demo.endpoint})")
    demo.say(
        f"           see where uploads are: python -m jobctl status --endpoint-url "
        f"{demo.endpoint} --stack {demo.stack}"
    )
    demo.say(
        f"           what happened to one: python -m jobctl show --endpoint-url {demo.endpoint} "
        f"--stack {demo.stack} <key>"
    )
    outcomes: list[Outcome] = []
    reading = threading.Event()

    def on_ctrl_c(signal_number: int, frame: FrameType | None) -> None:
        # Raised at any instruction, KeyboardInterrupt can land inside threading's or a
        # client's own locking and leave the run unable to finish. The loops stop at their
        # next pause instead; a blocking read of stdin, or a second Ctrl-C, is interrupted.
        again = demo.stopping.is_set()
        demo.stopping.set()
        if again or reading.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        for batch in watch_paths(folder, stdin, demo.pause, reading):
            existing = [p for p in batch if p.is_file()]
            for missing in set(batch) - set(existing):
                demo.say(f"skipped  {missing}: not a file")
            if existing:
                process_batch(demo, existing, outcomes)
            else:
                demo.sweeper.due()  # the minute's sweep goes on while nothing comes
    except KeyboardInterrupt:
        demo.say("stopped")
    finally:
        signal.signal(signal.SIGINT, previous)
    return outcomes


# --- the run --------------------------------------------------------------------------------------


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
    interrupt: bool = True,
    say: Printer = print,
) -> DemoResult:
    """The demo, with what happened to each upload; `overrides` replace stack config values.

    `burst` uploads that many generated files at once instead of one file after another, on
    FARGATE_SPOT unless `overrides` name a capacityProvider, and (with `interrupt`) one of their
    tasks is interrupted as Spot reclaims one.
    """
    for path in files:
        if not path.is_file():
            say(f"error: {path} is not a file; name files to upload, or none for a sample")
            return DemoResult(2)
    if watch is not None and not watch.is_dir():
        say(f"error: --watch {watch} is not a folder")
        return DemoResult(2)
    if burst < 0:
        say(f"error: --burst {burst}: give a number of uploads, 1 or more")
        return DemoResult(2)
    config = dict(overrides or {})
    if burst:
        # Interruptions happen on Spot: the burst runs there, as a stack that saves 70 % would.
        config.setdefault("capacityProvider", "FARGATE_SPOT")
    try:
        evaluation = evaluate(stack, config)
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
                interrupt=interrupt,
                say=locked(say),
            )
    except EmulatorError as error:
        say(f"error: {error}")
        return DemoResult(1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


def _provisioned(
    evaluation: Evaluation, scratch: Path, stack: str, endpoint: str, say: Printer
) -> Pipeline:
    say(f"emulator   {endpoint} (moto), stack {stack!r} evaluated offline")
    pipeline = provision(evaluation, scratch)
    say(
        f"provision  bucket {pipeline.bucket}, trigger on {pipeline.upload_prefix!r}, "
        f"results under {pipeline.result_prefix!r}"
    )
    say(f"           cluster {pipeline.cluster_arn}")
    say(f"           task definition {pipeline.task_definition_arn}")
    stand_in = f" ({pipeline.job_table.stand_in})" if pipeline.job_table.stand_in else ""
    say(f"           job table {pipeline.job_table.name}{stand_in}")
    rules = pipeline.rules
    stops = "as the program's rule matches them" if rules.patterns else "(no rule declared)"
    schedule = f"; deployed: {rules.schedule}" if rules.schedule else ""
    say(
        f"           events task stops → runner {stops}; the sweep every "
        f"{SWEEP_SECONDS:g} s here{schedule}"
    )
    for note in pipeline.notes:
        say(f"           note: {note}")
    if pipeline.secret_names:
        # The emulator holds none of the user's parameters or secrets; a value exported in
        # this shell reaches the job, as ECS would set it.
        say(
            f"           secrets {', '.join(pipeline.secret_names)}: not read here (the "
            "emulator has none of your parameters); export them to pass values to the job"
        )
    return pipeline


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
    interrupt: bool,
    say: Printer,
) -> DemoResult:
    point_at_emulator(os.environ, endpoint)
    hold_tasks_running(endpoint)
    demo: Demo | None = None
    try:
        pipeline = _provisioned(evaluation, scratch, stack, endpoint, say)
        if docker:
            build_image(pipeline, say)
        runner = load_runner(
            pipeline.runner_env,
            emit_metric=publish_metric,
        )
        demo = Demo(
            pipeline,
            runner,
            Fargate(pipeline, runner, endpoint=endpoint, docker=docker),
            Sweeper(runner, say, rule_arn=pipeline.rules.schedule_arn),
            endpoint,
            say,
            stack=stack,
        )
        if burst:
            outcomes = burst_mode.run_burst(
                demo, burst_mode.burst_files(scratch, burst), interrupt=interrupt
            )
        elif watch is not None or stdin:
            demo.fargate.on_line = lambda running, line: say(
                f"           │ {describe_log_line(line)}"
            )
            outcomes = _watch(demo, watch, stdin)
        else:
            sample = not files
            if sample:
                files = sample_files(scratch)
                say(f"\nno files given: uploading a generated sample of {len(files)} files")
            demo.fargate.on_line = lambda running, line: say(
                f"           │ {describe_log_line(line)}"
            )
            outcomes = process_batch(demo, files)
            if sample and outcomes:
                show_upload(demo, outcomes[0].key)
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
    except (DemoError, ProvisionError) as error:
        say(f"error: {error}")
        return DemoResult(1, endpoint=endpoint)
    finally:
        if demo is not None:
            demo.fargate.stop()


# --- the command ----------------------------------------------------------------------------------


def register(commands: Any) -> None:
    run_parser = commands.add_parser(
        "demo",
        help="run the whole pipeline locally on an embedded AWS emulator",
        description=(
            "Run the whole pipeline on this machine: start an embedded AWS emulator (moto on "
            "127.0.0.1), provision it from the Pulumi program's declarations for --stack, upload "
            "the files, hand the emulator's S3 events to the real runner handler, run every "
            "task it starts as `python -m task` and hand the runner each task's stop as "
            "EventBridge would. Exits 0 only when every upload produced a successful task and "
            "its result."
        ),
    )
    run_parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="files to upload under the stack's uploadPrefix (default: a generated sample)",
    )
    run_parser.add_argument(
        "--stack",
        default="dev",
        help="take the configuration from Pulumi.<STACK>.yaml (default: dev)",
    )
    mode = run_parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--watch",
        type=Path,
        metavar="FOLDER",
        help="keep the emulator running and process every file dropped into FOLDER until Ctrl-C",
    )
    mode.add_argument(
        "--stdin",
        action="store_true",
        help="keep the emulator running and process each path read from stdin until EOF/Ctrl-C",
    )
    mode.add_argument(
        "--burst",
        type=int,
        default=0,
        metavar="N",
        help="upload N generated files at once and watch them wait and drain, on FARGATE_SPOT, "
        "one task interrupted as Spot reclaims one and retried",
    )
    run_parser.add_argument(
        "--max-tasks",
        type=int,
        metavar="N",
        help="the stack's maxConcurrentTasks for this run: at most N tasks at once",
    )
    run_parser.add_argument(
        "--docker",
        action="store_true",
        help="build task/Dockerfile and run the real image (needs a Docker engine)",
    )
    run_parser.set_defaults(command=command)


def command(args: argparse.Namespace, say: Printer) -> int:
    return run(
        files=args.files,
        stack=args.stack,
        docker=args.docker,
        watch=args.watch,
        stdin=args.stdin,
        burst=args.burst,
        max_tasks=args.max_tasks,
        say=say,
    )
