"""Where a command finds the stack: its outputs, and the job table they name.

A deployed stack's outputs come from the Pulumi CLI (`pulumi stack output`); the demo's
emulator has no Pulumi state, so for it (`--endpoint-url`) the program is evaluated offline for
the stack and boto3 is pointed at the emulator, as the demo provisioned it from the same
evaluation. Every read-only command (`status`, `show`, `jobs`) takes its outputs from here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from job_store import JobStore

from jobctl.emulator import point_at_emulator
from jobctl.evaluate import ProgramError, evaluate
from jobctl.provision import with_job_table

# Reading needs no retention: the TTL a JobStore writes is for records it creates, and the
# read-only commands create none.
READ_ONLY_RECORD_DAYS = 1


class StackError(Exception):
    """What the user must fix before the stack can be read; the message says how."""


@dataclass(frozen=True)
class Stack:
    """A stack's outputs, and a phrase naming where they were read (for headings)."""

    outputs: Mapping[str, Any]
    where: str
    endpoint_url: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--stack and --endpoint-url, the same for every command that reads a stack."""
    parser.add_argument("--stack", default="dev", help="the stack to read (default: dev)")
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the demo's emulator (the demo prints its URL), instead of the deployed stack",
    )


def deployed_outputs(
    stack: str, instead: str = "pass --endpoint-url to read the demo's emulator"
) -> dict[str, Any]:
    """The deployed stack's outputs, read with the Pulumi CLI; `instead` says what else works."""
    if shutil.which("pulumi") is None:
        raise StackError(
            f"reading the stack's outputs needs the Pulumi CLI; install it, or {instead}"
        )
    done = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"`pulumi stack output --stack {stack}` failed: {done.stderr.strip()}")
    outputs: dict[str, Any] = json.loads(done.stdout)
    return outputs


def emulator_outputs(stack: str, endpoint_url: str) -> dict[str, Any]:
    """The outputs the program declares for `stack`, evaluated offline, as the demo provisioned
    them in the emulator at `endpoint_url`; this process's boto3 then talks to the emulator."""
    try:
        evaluation = evaluate(stack)
    except (ProgramError, ValueError) as error:
        raise StackError(f"the Pulumi program failed for stack {stack!r}: {error}") from error
    point_at_emulator(os.environ, endpoint_url)
    return with_job_table(evaluation)


def read_stack(stack: str, endpoint_url: str | None) -> Stack:
    """The stack the command's --stack and --endpoint-url name."""
    if endpoint_url is None:
        return Stack(deployed_outputs(stack), f"stack {stack!r}")
    return Stack(
        emulator_outputs(stack, endpoint_url), f"the emulator at {endpoint_url}", endpoint_url
    )


def require(outputs: Mapping[str, Any], *names: str) -> None:
    """Every output named, or a StackError naming those missing and what to do."""
    missing = [name for name in names if not outputs.get(name)]
    if missing:
        raise StackError(
            f"the stack's outputs lack {', '.join(missing)}: deploy this version of the program "
            "(`pulumi up`) first"
        )


def job_store(outputs: Mapping[str, Any]) -> JobStore:
    """The job table the outputs name (`jobTableName`), read through the runner's own code."""
    require(outputs, "jobTableName")
    return JobStore(
        boto3.client("dynamodb"), str(outputs["jobTableName"]), record_days=READ_ONLY_RECORD_DAYS
    )
