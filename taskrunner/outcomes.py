"""What happened to one upload record, as the runner logs it and decides from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from upload_events import Upload

# started / already-started: the upload has its task. skipped: nothing to start (a removal, a
# result). waiting: it can start later (capacity, throttling, the cap, a lost answer); parked /
# deferred: waiting in the backlog. failed: waiting cannot mend it (access, a rejected
# parameter). malformed: the record is not what S3 sends. dead-lettered: moved to the dead-letter
# queue from the backlog.
Outcome = Literal[
    "started",
    "already-started",
    "skipped",
    "waiting",
    "parked",
    "deferred",
    "failed",
    "malformed",
    "dead-lettered",
]


@dataclass(frozen=True)
class RecordResult:
    """One record's outcome; `task_arn` for started tasks, `reason` otherwise.

    Of those `waiting`: `full` ones wait their turn (the cap or the account's quota is reached:
    the longer the backlog, the longer the wait, so their delay keeps growing); the others met a
    passing fault (throttling, a capacity shortage, a server error) and are tried again soon.
    `maybe_started` marks a lost RunTask answer: the task may be running already, and the
    retry's clientToken will tell.
    """

    outcome: Outcome
    upload: Upload | None = None
    task_arn: str | None = None
    reason: str | None = None
    maybe_started: bool = False
    full: bool = False

    @property
    def has_task(self) -> bool:
        return self.outcome in ("started", "already-started")

    @property
    def is_error(self) -> bool:
        return self.outcome in ("failed", "malformed", "dead-lettered")

    def log_line(self, index: int, **extra: object) -> str:
        line: dict[str, object] = {"record": index, "outcome": self.outcome, **extra}
        if self.upload is not None:
            line |= {
                "bucket": self.upload.bucket,
                "key": self.upload.key,
                "event": self.upload.event_name,
            }
            if self.upload.version_id:
                line["versionId"] = self.upload.version_id
        if self.task_arn is not None:
            line["taskArn"] = self.task_arn
        if self.reason is not None:
            line["reason"] = self.reason
        return json.dumps(line, ensure_ascii=False)
