"""Load the real runner handler (taskrunner/handler.py) into this process."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from jobctl.evaluate import PROJECT_DIR

TASKRUNNER_DIR = PROJECT_DIR / "taskrunner"
# The Lambda package's modules are top-level, as in its zip.
if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

# The event field the redrive adds so that a failed task's upload starts a *new* task.
from upload_events import REDRIVE_FIELD  # noqa: E402 - needs the path above

__all__ = ["REDRIVE_FIELD", "TASKRUNNER_DIR", "Runner", "load_runner"]

Runner = Callable[[Any, Any], Any]


def load_runner(env: Mapping[str, str]) -> Runner:
    """Import the handler with the Lambda's environment (it reads its settings at import).

    The environment is this process's own again afterwards: the handler keeps what it read.
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
    runner: Runner = module.handler
    return runner
