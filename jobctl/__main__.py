"""python -m jobctl: operator commands for s3-fargate-jobs, one module per command."""

from __future__ import annotations

import argparse
import sys

from jobctl import demo, jobs, redrive, show, status

COMMANDS = (demo, status, show, jobs, redrive)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m jobctl", description="Operator commands for s3-fargate-jobs."
    )
    commands = root.add_subparsers(dest="name", required=True)
    for module in COMMANDS:
        module.register(commands)
    return root


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a person watches these lines as they happen


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.command(args, _say)
    return code


if __name__ == "__main__":
    sys.exit(main())
