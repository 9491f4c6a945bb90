"""python -m jobctl: operator commands for s3-fargate-jobs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jobctl import demo, redrive, status
from jobctl.emulator import point_at_emulator
from jobctl.evaluate import ProgramError, evaluate


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m jobctl", description="Operator commands for s3-fargate-jobs."
    )
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "demo",
        help="run the whole pipeline locally on an embedded AWS emulator",
        description=(
            "Run the whole pipeline on this machine: start an embedded AWS emulator (moto on "
            "127.0.0.1), provision it from the Pulumi program's declarations for --stack, upload "
            "the files, hand the emulator's S3 events to the real runner handler and run every "
            "task it starts as `python -m task`. Exits 0 only when every upload produced a "
            "successful task and its result."
        ),
    )
    run.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="files to upload under the stack's uploadPrefix (default: a generated sample)",
    )
    run.add_argument(
        "--stack",
        default="dev",
        help="take the configuration from Pulumi.<STACK>.yaml (default: dev)",
    )
    mode = run.add_mutually_exclusive_group()
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
        help="upload N generated files at once and watch them drain through the backlog",
    )
    run.add_argument(
        "--max-tasks",
        type=int,
        metavar="N",
        help="the stack's maxConcurrentTasks for this run: at most N tasks at once",
    )
    run.add_argument(
        "--docker",
        action="store_true",
        help="build task/Dockerfile and run the real image (needs a Docker engine)",
    )

    replay = commands.add_parser(
        "redrive",
        help="restart the uploads waiting in the dead-letter and failed-jobs queues",
        description=(
            "Read the runner's dead-letter queue and the failed-jobs queue and restart the work "
            "of each message through the deployed runner's configuration, with your AWS "
            "credentials (ecs:RunTask, iam:PassRole on the job roles, sqs, "
            "lambda:GetFunctionConfiguration). A message is deleted only after its work started "
            "again."
        ),
    )
    replay.add_argument(
        "--stack", help="read queue URLs and the runner's name from this stack's outputs"
    )
    replay.add_argument("--dead-letter-queue-url", help="the runner's dead-letter queue")
    replay.add_argument("--failed-jobs-queue-url", help="the failed-jobs queue")
    replay.add_argument("--function", help="the runner Lambda's name")
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be restarted; change nothing"
    )
    replay.add_argument(
        "--limit", type=int, default=1000, help="at most this many messages per queue (1000)"
    )

    look = commands.add_parser(
        "status",
        help="uploads waiting in the backlog, tasks pending and running, failures waiting",
        description=(
            "Show where the uploads are: waiting in the backlog (and how long the oldest has "
            "waited), tasks pending and running, failed jobs and dead letters waiting for a "
            "redrive. Reads the stack's outputs with the Pulumi CLI, or, with --endpoint-url, "
            "the program evaluated offline for the demo's emulator. Changes nothing."
        ),
    )
    look.add_argument("--stack", default="dev", help="the stack to look at (default: dev)")
    look.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the demo's emulator (make demo prints it), instead of the deployed stack",
    )
    return root


def _status(stack: str, endpoint_url: str | None) -> int:
    if endpoint_url is None:
        try:
            outputs = redrive.stack_outputs(
                stack, instead="pass --endpoint-url to look at the demo's emulator"
            )
        except redrive.RedriveError as error:
            _say(f"error: {error}")
            return 2
        return status.run(outputs, where=f"stack {stack!r}", say=_say)
    try:
        evaluation = evaluate(stack)
    except (ProgramError, ValueError) as error:
        _say(f"error: the Pulumi program failed for stack {stack!r}: {error}")
        return 2
    point_at_emulator(os.environ, endpoint_url)
    return status.run(evaluation.outputs, where=f"the emulator at {endpoint_url}", say=_say)


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a person watches these lines as they happen


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        return demo.run(
            files=args.files,
            stack=args.stack,
            docker=args.docker,
            watch=args.watch,
            stdin=args.stdin,
            burst=args.burst,
            max_tasks=args.max_tasks,
            say=_say,
        )
    if args.command == "redrive":
        return redrive.run(
            stack=args.stack,
            dead_letter_queue_url=args.dead_letter_queue_url,
            failed_jobs_queue_url=args.failed_jobs_queue_url,
            function=args.function,
            dry_run=args.dry_run,
            limit=args.limit,
            say=_say,
        )
    if args.command == "status":
        return _status(args.stack, args.endpoint_url)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
