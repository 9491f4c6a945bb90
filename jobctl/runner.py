"""Load the real runner handler (taskrunner/handler.py) into this process."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

# Imported after jobctl put taskrunner/ on the path: the runner's own names for what the
# commands read and write (message attributes, the redrive field, the sweep's event).
from backlog import REASON_ATTRIBUTE as BACKLOG_REASON_ATTRIBUTE
from job_store import JobStore
from reports import METRIC_DIMENSION, METRIC_NAMESPACE
from runner_settings import RunnerSettings
from services import Services
from sweep import SCHEDULE_DETAIL_TYPE
from upload_events import REDRIVE_FIELD

from jobctl import TASKRUNNER_DIR

__all__ = [
    "BACKLOG_REASON_ATTRIBUTE",
    "METRIC_DIMENSION",
    "METRIC_NAMESPACE",
    "REDRIVE_FIELD",
    "SWEEP_EVENT",
    "TASKRUNNER_DIR",
    "LoadedRunner",
    "Runner",
    "load_runner",
]

Runner = Callable[[Any, Any], Any]

# What EventBridge's schedule hands the runner once a minute (the sweep reads only the type).
SWEEP_EVENT: Mapping[str, Any] = {
    "version": "0",
    "detail-type": SCHEDULE_DETAIL_TYPE,
    "source": "aws.events",
    "detail": {},
}


class LoadedRunner:
    """The handler as Lambda imported it, with the settings and clients it made at import."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def __call__(self, event: Any, context: Any = None) -> Any:
        return self._module.handler(event, context)

    @property
    def settings(self) -> RunnerSettings:
        settings: RunnerSettings = self._module.SETTINGS
        return settings

    @property
    def services(self) -> Services:
        services: Services = self._module.SERVICES
        return services

    @property
    def store(self) -> JobStore:
        """The job table the runner writes, through its own client."""
        return self.services.job_store(self.settings)

    def sweep(self, rule_arn: str | None = None) -> Any:
        """The minute's sweep, as the schedule (the rule `rule_arn`) would invoke it."""
        event = {**SWEEP_EVENT, "resources": [rule_arn] if rule_arn else []}
        return self(event, None)


def load_runner(
    env: Mapping[str, str],
    emit_metric: Callable[[str], None] | None = None,
) -> LoadedRunner:
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
    return LoadedRunner(module)
