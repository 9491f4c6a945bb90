"""Lambda entry point (handler string `handler.handler`): one Fargate task per S3 upload.

Settings and the ECS client are made once per container, at import, so a warm invocation pays
for neither; a missing or invalid setting fails the container's start with a message naming it.
"""

from __future__ import annotations

import os
from typing import Protocol

from runner_settings import load_settings
from task_starter import Summary, make_ecs_client, process_event

SETTINGS = load_settings(os.environ)
ECS = make_ecs_client()


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def handler(event: object, context: LambdaContext | None) -> Summary:
    """Start a task per upload in the S3 event and return what was started and skipped.

    Raises ValueError for a malformed event and TasksNotStartedError when any upload got no
    task, after trying every record, so that Lambda retries and finally dead-letters the event.
    `context` may be None (a redrive or a test calling in-process): then time is not limited.
    """
    remaining_ms = context.get_remaining_time_in_millis if context is not None else None
    return process_event(event, SETTINGS, ECS, remaining_ms=remaining_ms)
