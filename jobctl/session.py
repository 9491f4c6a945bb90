"""One run of the demo: its pipeline, runner, tasks and schedule, and what it says of each
upload (shared by demo.py's modes and burst.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobctl import show
from jobctl.fargate import Fargate, Running, Stopped
from jobctl.pipeline import Outcome, Printer, Sweeper, latest_job
from jobctl.provision import Pipeline
from jobctl.runner import LoadedRunner


@dataclass
class Demo:
    """One run's pipeline, runner, tasks and schedule."""

    pipeline: Pipeline
    runner: LoadedRunner
    fargate: Fargate
    sweeper: Sweeper
    endpoint: str
    say: Printer
    stack: str = "dev"
    # Set by Ctrl-C in watch mode: the loops check it at their pauses and between uploads, and
    # stop there (demo._watch says why the signal does not raise at once).
    stopping: threading.Event = field(default_factory=threading.Event)

    def pause(self, seconds: float) -> None:
        """Wait, or end the wait with KeyboardInterrupt once Ctrl-C was pressed."""
        if self.stopping.wait(seconds):
            raise KeyboardInterrupt


def locked(say: Printer) -> Printer:
    """`say` for the main loop and the task output readers alike, one line at a time."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            say(line)

    return locked


def announce_task(demo: Demo, running: Running, outcomes: Mapping[str, Outcome]) -> None:
    outcome = outcomes.get(running.key)
    if outcome is None:
        demo.say(f"note     ECS also runs {running.run.task_arn} for {running.key}")
        return
    outcome.runs.append(running.run)
    demo.say(f"task     {running.run.task_arn} (attempt {running.run.attempt})")
    demo.say(f"           S3_KEY={running.key}")


def announce_stop(demo: Demo, stopped: Stopped) -> str:
    """The exit, the stop as ECS reports it, and what the runner made of it; the job's state."""
    run = stopped.running.run
    demo.say(f"exit     {run.exit_code} after {run.seconds or 0:.2f} s")
    answer = stopped.answer
    state = str(answer.get("state", answer.get("outcome", "?")))
    job = latest_job(demo.runner.store, demo.pipeline, stopped.running.key)
    verdict = state
    if job is not None and job.state == "waiting" and job.current is not None:
        wait = max(0.0, (job.retry_at or time.time()) - time.time())
        verdict = f"waiting: {job.current.cause}, attempt {job.attempt_count + 1} in {wait:.0f} s"
    elif job is not None and job.state == "failed":
        verdict = f"failed: {job.reason}"
    demo.say(f"stopped  {run.stop_code} (as EventBridge delivers it) → runner: job {verdict}")
    return state


def summarise(outcomes: list[Outcome], say: Printer) -> int:
    failed = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed)
    say(f"{ok} of {len(outcomes)} uploads processed successfully")
    for outcome in failed:
        say(f"FAILED   {outcome.key}: {outcome.failure or 'no result'}")
    return 0 if not failed else 1


def show_upload(demo: Demo, key: str) -> None:
    """What `jobctl show` prints for one upload, here against the emulator."""
    target = f"s3://{demo.pipeline.bucket}/{key}"
    demo.say("")
    demo.say(
        f"show     python -m jobctl show --stack {demo.stack} --endpoint-url {demo.endpoint} "
        f"'{target}'"
    )
    show.show(
        demo.runner.store,
        demo.pipeline.outputs,
        target,
        lambda line: demo.say(f"           {line}" if line else ""),
        endpoint_url=demo.endpoint,
    )
