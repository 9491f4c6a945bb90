"""Lambda entry point (handler string `handler.handler`): one Fargate task per S3 upload.

S3 invokes it with upload events; the backlog's event source mapping invokes it with batches of
uploads that had to wait. Settings and the ECS client are made once per container, at import,
so a warm invocation pays for neither; a missing or invalid setting fails the container's start
with a message naming it.
"""

from __future__ import annotations

import os
from typing import Protocol

from backlog import BatchResponse
from dispatch import Summary, process_event
from runner_settings import load_settings
from services import Services, make_ecs_client

SETTINGS = load_settings(os.environ)
SERVICES = Services(make_ecs_client())


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def handler(event: object, context: LambdaContext | None) -> Summary | BatchResponse:
    """Start a task per upload; say what was started, skipped and parked.

    For an S3 event: the summary; raises ValueError for a malformed event and
    TasksNotStartedError when an upload got no task and waiting cannot mend it, after trying
    every record, so that Lambda retries and finally dead-letters the event. For a backlog
    batch: `{"batchItemFailures": [...]}`, the messages to try again later.
    `context` may be None (a redrive or a test calling in-process): then time is not limited.
    """
    remaining_ms = context.get_remaining_time_in_millis if context is not None else None
    return process_event(event, SETTINGS, SERVICES, remaining_ms=remaining_ms)
