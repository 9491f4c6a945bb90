"""Load the real runner handler (taskrunner/handler.py) into this process."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

# The names the runner's metrics are written under, which `jobctl status` reads.
from backlog import REASON_ATTRIBUTE as BACKLOG_REASON_ATTRIBUTE
from reports import METRIC_DIMENSION, METRIC_NAMESPACE

from jobctl import TASKRUNNER_DIR

WAIT_METRIC = "OldestWaitSeconds"

# The event field the redrive adds so that a failed task's upload starts a *new* task.
from upload_events import REDRIVE_FIELD  # noqa: E402 - after the path is set above

__all__ = [
    "BACKLOG_REASON_ATTRIBUTE",
    "METRIC_DIMENSION",
    "METRIC_NAMESPACE",
    "REDRIVE_FIELD",
    "TASKRUNNER_DIR",
    "WAIT_METRIC",
    "Runner",
    "load_runner",
]

Runner = Callable[[Any, Any], Any]


def load_runner(env: Mapping[str, str], emit_metric: Callable[[str], None] | None = None) -> Runner:
    """Import the handler with the Lambda's environment (it reads its settings at import).

    The environment is this process's own again afterwards: the handler keeps what it read.
    `emit_metric` receives the embedded-metric lines the runner writes to stdout in Lambda.
    """
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        if "handler" in sys.modules:
            module = importlib.reload(sys.modules["handler"])
        else:
            module = importlib.import_module("handler")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if emit_metric is not None:
        module.SERVICES.emit_metric = emit_metric
    runner: Runner = module.handler
    return runner
