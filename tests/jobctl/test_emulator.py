"""The emulator behaves as Fargate where the runner can tell: a task runs until it is stopped."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from jobctl.provision import Pipeline
from jobctl.status import read_status
from tests.jobctl.conftest import emulator_runner


def test_a_task_described_again_and_again_runs_until_it_is_stopped(
    emulator_stacks: Callable[[str], Pipeline], emulator_env: str
) -> None:
    # moto on its own moves a task towards STOPPED with each DescribeTasks, and the sweep would
    # then settle a job whose task still runs as a success, with moto's made-up exit code.
    dev = emulator_runner(emulator_stacks("dev"))
    key = f"uploads/long job {uuid.uuid4().hex[:6]}.csv"
    dev.upload(key)
    for _ in range(6):
        dev.runner.sweep()
    assert dev.job(key).state == "running"
    found = read_status(dev.outputs)
    assert found.running >= 1
    dev.stop(key, exit_code=0)
    assert dev.job(key).state == "succeeded"
