"""`jobctl jobs`: the jobs recorded lately, newest first, as a table; filtered by state, key
prefix and age. Each row's key is what `jobctl show` takes to tell that job's story."""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from job_record import STATES, Job
from job_store import StoreError

from jobctl import stack as stacks
from jobctl.show import duration
from jobctl.stack import StackError

Printer = Callable[[str], None]
DEFAULT_SINCE = "24h"
DEFAULT_LIMIT = 50
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SINCE = re.compile(r"(?:(\d+)([smhd]))+")
_PART = re.compile(r"(\d+)([smhd])")
NOTE_WIDTH = 70


class UsageError(ValueError):
    """An option the user gave that cannot be used; the message says what is allowed."""


def parse_since(text: str) -> float:
    """Seconds in a duration such as 90s, 30m, 2h, 7d or 1h30m."""
    cleaned = text.strip().lower()
    if not _SINCE.fullmatch(cleaned):
        raise UsageError(
            f"--since {text!r} is not a duration: write a number and a unit (s, m, h or d), "
            "e.g. 90s, 30m, 2h, 7d or 1h30m"
        )
    seconds = sum(int(number) * UNITS[unit] for number, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise UsageError(f"--since {text!r} is no time at all: give a duration above 0")
    return float(seconds)


def check_state(state: str | None) -> str | None:
    if state is not None and state not in STATES:
        raise UsageError(f"--state {state!r} is not a job state; choose from {', '.join(STATES)}")
    return state


def matching(
    jobs: Iterable[Job], *, state: str | None, prefix: str | None, limit: int
) -> Iterator[Job]:
    """The jobs that pass the filters, at most `limit` (the rest are not read)."""
    passing = (
        job
        for job in jobs
        if (state is None or job.state == state) and (prefix is None or job.key.startswith(prefix))
    )
    return itertools.islice(passing, limit)


def _note(job: Job) -> str:
    """The row's last column: how it ended, or what it waits for."""
    attempt = job.current
    if job.state == "failed" and attempt is not None and attempt.stopped_at is not None:
        # The cause and the exit code first: a stop reason's long tail can wait for `show`.
        how = f"exit {attempt.exit_code}" if attempt.exit_code is not None else attempt.stop_code
        note = f"{attempt.cause or 'failed'}, {how}: {attempt.stopped_reason or ''}".rstrip(": ")
    elif job.state == "failed":
        note = job.reason or "no reason recorded"
    elif job.state == "succeeded" and attempt and attempt.started_at and attempt.stopped_at:
        note = f"ran {duration(attempt.stopped_at - attempt.started_at)}"
        retried = [a.cause for a in job.attempts[:-1] if a.cause]
        if retried:
            note += f", after {', '.join(retried)}"
    elif job.state == "waiting" and job.attempts:
        note = f"waits to retry: {job.reason or 'its delay'}"
    elif attempt is not None and attempt.task_id:
        note = f"task {attempt.task_id}"
    else:
        note = ""
    return note if len(note) <= NOTE_WIDTH else note[: NOTE_WIDTH - 1] + "…"


def table(jobs: list[Job]) -> list[str]:
    """The jobs as aligned columns, newest first as given."""
    rows = [
        (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(job.recorded_at)),
            job.state,
            str(job.attempt_count),
            f"s3://{job.bucket}/{job.key}",
            _note(job),
        )
        for job in jobs
    ]
    header = ("recorded (UTC)", "state", "tries", "upload", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    return [
        (
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            + ("  " + row[4] if row[4] else "")
        ).rstrip()
        for row in [header, *rows]
    ]


def list_jobs(
    store: Any,
    say: Printer,
    *,
    state: str | None = None,
    prefix: str | None = None,
    since: str = DEFAULT_SINCE,
    limit: int = DEFAULT_LIMIT,
    now: float | None = None,
    show_options: str = "",
) -> int:
    """Print the table; 0 even when nothing matches (that is an answer too)."""
    check_state(state)
    window = parse_since(since)
    if limit < 1:
        raise UsageError(f"--limit {limit}: give 1 or more")
    now = time.time() if now is None else now
    found = list(
        matching(
            store.recent(since=now - window, until=now),
            state=state,
            prefix=prefix,
            limit=limit + 1,  # one more than shown says whether there are more
        )
    )
    filters = [f"state {state}"] if state else []
    if prefix:
        filters.append(f"keys starting {prefix!r}")
    where = f" ({', '.join(filters)})" if filters else ""
    if not found:
        say(f"no jobs recorded in the last {since}{where}")
        return 0
    shown = found[:limit]
    what = f"{'job' if len(shown) == 1 else 'jobs'} recorded in the last {since}{where}"
    for line in table(shown):
        say(line)
    say("")
    more = (
        f"; more match: raise --limit (now {limit}) or narrow --since" if len(found) > limit else ""
    )
    say(f"{len(shown)} {what}, newest first{more}")
    say(f"what happened to one: python -m jobctl show{show_options} s3://<bucket>/<key>")
    return 0


def register(commands: Any) -> None:
    look = commands.add_parser(
        "jobs",
        help="the jobs recorded lately, newest first, filtered by state, key prefix and age",
        description=(
            "List the jobs of the job table recorded within --since, newest first: when each "
            "was recorded, its state, its attempts, the upload and how it ended. Changes nothing."
        ),
    )
    stacks.add_arguments(look)
    look.add_argument("--state", help=f"only jobs in this state: {', '.join(STATES)}")
    look.add_argument("--prefix", metavar="P", help="only uploads whose key starts with P")
    look.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        metavar="AGE",
        help=f"only jobs recorded within AGE: 90s, 30m, 2h, 7d (default {DEFAULT_SINCE})",
    )
    look.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N jobs (default {DEFAULT_LIMIT})",
    )
    look.set_defaults(command=command)


def command(args: argparse.Namespace, say: Printer) -> int:
    try:
        # The options first: a typo is named before anything is read.
        check_state(args.state)
        parse_since(args.since)
        found = stacks.read_stack(args.stack, args.endpoint_url)
        store = stacks.job_store(found.outputs)
        options = f" --stack {args.stack}"
        if found.endpoint_url:
            options += f" --endpoint-url {found.endpoint_url}"
        return list_jobs(
            store,
            say,
            state=args.state,
            prefix=args.prefix,
            since=args.since,
            limit=args.limit,
            show_options=options,
        )
    except (UsageError, StackError) as error:
        say(f"error: {error}")
        return 2
    except (StoreError, ClientError, BotoCoreError) as error:
        say(f"error: reading the job table failed: {error}")
        return 1
