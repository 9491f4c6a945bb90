"""Which module handles an event: one per kind (see handler.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner_settings import RunnerSettings
from services import Services
from sweep import handle_sweep, is_sweep_event
from task_events import handle_task_event, is_task_event
from upload_events import is_backlog_event
from uploads import handle_backlog, handle_uploads


def route(
    event: Any,
    settings: RunnerSettings,
    services: Services,
    *,
    remaining_ms: Callable[[], int] | None = None,
) -> Any:
    """The module for the event's kind; anything else is taken for an S3 event (which names
    what is wrong with it)."""
    if is_task_event(event):
        return handle_task_event(event, settings, services, remaining_ms=remaining_ms)
    if is_sweep_event(event):
        return handle_sweep(event, settings, services, remaining_ms=remaining_ms)
    if is_backlog_event(event):
        return handle_backlog(event, settings, services, remaining_ms=remaining_ms)
    return handle_uploads(event, settings, services, remaining_ms=remaining_ms)
