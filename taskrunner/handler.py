"""Lambda entry point (handler string `handler.handler`): one job, and one Fargate task at a
time, per S3 upload.

Four kinds of event reach it, each handled by its own module:
- S3's upload notification (uploads.handle_uploads): record each upload's job, fill free slots;
- a batch from the backlog queue (uploads.handle_backlog): uploads the job table could not take;
- ECS's task state change, through EventBridge (task_events): a task stopped, its slot is free;
- the sweep's schedule, once a minute (sweep): what no event said.
Settings and the ECS client are made once per container, at import, so a warm invocation pays
for neither; a missing or invalid setting fails the container's start with a message naming it.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from dispatch import route
from runner_settings import load_settings
from services import Services, make_ecs_client

SETTINGS = load_settings(os.environ)
SERVICES = Services(make_ecs_client())


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def handler(event: object, context: LambdaContext | None) -> Any:
    """Handle one event of any of the four kinds.

    For an S3 event: the summary (started, waiting, skipped, parked); raises ValueError for a
    malformed event and TasksNotStartedError when an upload got no job, after trying every
    record, so that Lambda retries and finally dead-letters the event. For a backlog batch:
    `{"batchItemFailures": [...]}`. `context` may be None (a redrive or a test calling
    in-process): then time is not limited.
    """
    remaining_ms = context.get_remaining_time_in_millis if context is not None else None
    return route(event, SETTINGS, SERVICES, remaining_ms=remaining_ms)
