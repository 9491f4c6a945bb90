"""A burst of uploads at once: watch them wait for a task slot and drain as tasks stop.

Every file is uploaded first; the emulator's events go to the runner, which records a job for
each and starts what the cap (`--max-tasks`) lets start. Then, until every job has ended, this
plays the parts of AWS the emulator lacks: Fargate (every task ECS started runs here, its stop
handed to the runner as EventBridge's task state change, which starts the oldest waiting jobs
in the freed slot), the sweep's schedule (every second here), the backlog's event source
mapping. One task is interrupted as Spot reclaims one (SIGTERM: the job exits 143, the stop is
a SpotInterruption); the runner retries it, and its timeline is shown at the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from job_record import FINAL_STATES

from jobctl import status
from jobctl.fargate import Running, is_start_line
from jobctl.pipeline import (
    POLL_SECONDS,
    Outcome,
    dispatch_events,
    latest_job,
    poll_backlog,
    settle,
    upload,
)
from jobctl.session import Demo, show_upload

BURST_SECONDS = 300.0  # bounds a burst that stops draining


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


class Interrupter:
    """Interrupts one task as Spot reclaims one: the first first attempt seen reading its
    object gets SIGTERM. A task that finished before the signal reached it is not counted: the
    next one is tried."""

    def __init__(self, demo: Demo, wanted: int) -> None:
        self.demo = demo
        self.wanted = wanted
        self.sent: set[str] = set()  # task ARNs signalled
        self.interrupted: list[Running] = []  # those the signal stopped (exit 143)
        self._lock = threading.Lock()  # each task's output is read on its own thread

    def on_line(self, running: Running, line: str) -> None:
        """Called on the output reader's thread for each line a task prints."""
        if running.run.attempt != 1 or not is_start_line(line):
            return
        with self._lock:
            if len(self.sent) >= self.wanted:  # the signalled ones stopped, or will
                return
            self.sent.add(running.run.task_arn)
        self.demo.fargate.interrupt(running)

    def stopped(self, running: Running) -> bool:
        """Whether this stop is an interruption of ours that took (and count it)."""
        if running.run.task_arn not in self.sent:
            return False
        if running.run.stop_code == "SpotInterruption":
            self.interrupted.append(running)
            return True
        with self._lock:
            self.sent.discard(running.run.task_arn)  # too late: it had finished
        return False


def run_burst(demo: Demo, files: list[Path], *, interrupt: bool = True) -> list[Outcome]:
    """Upload every file at once, then run and drain until each job has ended."""
    pipeline, say = demo.pipeline, demo.say
    cap = int(pipeline.outputs.get("maxConcurrentTasks") or 0)
    limit = f"at most {cap} tasks at once" if cap else "as many tasks as the account allows"
    provider = pipeline.runner_env.get("CAPACITY_PROVIDER", "FARGATE")
    say(f"\nburst    {len(files)} uploads at once on {provider}; the runner starts {limit}")
    interrupter = Interrupter(demo, 1 if interrupt else 0)
    demo.fargate.on_line = interrupter.on_line
    outcomes = {}
    for path in files:
        outcome = upload(pipeline, path)
        outcomes[outcome.key] = outcome
    quiet: list[str] = []  # the per-event lines of a burst would drown the picture
    dispatch_events(pipeline, demo.runner, outcomes, quiet.append)
    undone = drain(demo, outcomes, interrupter)
    for outcome in outcomes.values():
        if outcome.key in undone and outcome.failure is None:
            outcome.failure = f"burst: its job had not ended within {BURST_SECONDS:.0f} s"
        settle(pipeline, outcome)
    say("")
    for line in status.read_status(pipeline.outputs).lines():
        say(f"status   {line}")
    for running in interrupter.interrupted:
        retried = outcomes[running.key]
        say("")
        say(
            f"retried  {running.key}: interrupted on attempt 1, "
            f"{'succeeded' if retried.ok else 'not done'} on attempt {retried.runs[-1].attempt}"
        )
        show_upload(demo, running.key)
    if interrupt and not interrupter.interrupted:
        say("note     no task ran long enough to be interrupted")
    return list(outcomes.values())


def drain(demo: Demo, outcomes: dict[str, Outcome], interrupter: Interrupter) -> set[str]:
    """Run the tasks, hand their stops, the sweep and the backlog to the runner until every
    job ended (or BURST_SECONDS passed); the keys whose job had not ended."""
    store = demo.runner.store
    shown = ""
    deadline = time.monotonic() + BURST_SECONDS
    undone = {key for key, outcome in outcomes.items() if not outcome.settled}
    while undone and time.monotonic() < deadline:
        launched, stopped = demo.fargate.step()
        for running in launched:
            if running.key in outcomes:
                outcomes[running.key].runs.append(running.run)
        for done in stopped:
            if interrupter.stopped(done.running):
                run = done.running.run
                demo.say(
                    f"spot     {done.running.key}: task {run.task_arn.rsplit('/', 1)[-1]} "
                    f"interrupted as Spot reclaims capacity (SIGTERM): exit {run.exit_code}, "
                    f"stop code {run.stop_code} → runner: job {done.answer.get('state')}"
                )
        if any(outcomes[key].parked for key in undone):
            poll_backlog(demo.pipeline, demo.runner, demo.say)
        # A job ends with its task's stop, or (failing) in a sweep: read those that may have.
        swept = demo.sweeper.due() is not None
        changed = set(undone) if swept else {d.running.key for d in stopped}
        for key in changed & undone:
            outcome = outcomes[key]
            outcome.job = latest_job(store, demo.pipeline, key)
            ended = outcome.job is not None and outcome.job.state in FINAL_STATES
            if ended and not demo.fargate.busy_with(key):
                undone.discard(key)
        line = _picture(demo, len(outcomes) - len(undone), len(outcomes))
        if line != shown:
            demo.say(line)
            shown = line
        time.sleep(POLL_SECONDS)
    return undone


def _picture(demo: Demo, done: int, total: int) -> str:
    """Jobs waiting (the runner's totals), tasks ECS runs, jobs ended."""
    stats = demo.runner.store.stats()
    slots = demo.runner.store.slots()
    waiting = max(0, stats.in_progress - slots.active)
    return (
        f"jobs     {waiting:3d} waiting, {demo.fargate.listed:3d} tasks running, "
        f"{done:3d} of {total} done"
    )
