"""The jobs' dashboard: what the runner's metrics say, one graph per question an operator asks.

Is work waiting, and is it moving? What finished, what failed, what had to be retried and why?
How long has the oldest job waited, and how long do tasks run? All from the metrics the runner
writes (infra/runner_metrics.py) under the job table's name, beside SQS's age of the backlog
queue and the runner Lambda's own errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from . import runner_metrics as m

WIDTH = 12  # half of the dashboard's 24 columns: two graphs a row
HEIGHT = 6
MINUTE = 60
FIVE_MINUTES = 300  # percentiles of a few tasks a minute need a wider window to mean anything


@dataclass(frozen=True)
class DashboardSources:
    """Where the graphs' data comes from."""

    region: pulumi.Input[str]
    job_table_name: pulumi.Input[str]
    backlog_queue_name: pulumi.Input[str]
    runner_function_name: pulumi.Input[str]
    backlog_age_alarm_seconds: int


def dashboard_name(name_prefix: str) -> str:
    """CloudWatch accepts letters, digits, "-" and "_" in a dashboard's name."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name_prefix)[:255]


def dashboard_url(region: pulumi.Input[str], name: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "https://", region, ".console.aws.amazon.com/cloudwatch/home?region=", region,
        "#dashboards:name=", name,
    )  # fmt: skip


def _jobs_metric(sources: DashboardSources, metric: str, **options: Any) -> list[pulumi.Input[Any]]:
    return [m.NAMESPACE, metric, m.JOBS_DIMENSION, sources.job_table_name, options]


def _graph(
    title: str,
    metrics: list[Any],
    sources: DashboardSources,
    *,
    stat: str,
    period: int,
    position: tuple[int, int],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    x, y = position
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": WIDTH,
        "height": HEIGHT,
        "properties": {
            "title": title,
            "region": sources.region,
            "view": "timeSeries",
            "stacked": False,
            "stat": stat,
            "period": period,
            "metrics": metrics,
            **(extra or {}),
        },
    }


def retries_by_cause_search(job_table_name: pulumi.Input[str]) -> pulumi.Output[str]:
    """Every cause the runner has retried for, one line each: a cause new to the runner shows
    up without a change here. Quoted values match exactly (CloudWatch search syntax)."""
    schema = f"{{{m.NAMESPACE},{m.CAUSE_DIMENSION},{m.JOBS_DIMENSION}}}"
    return pulumi.Output.concat(
        f'SEARCH(\'{schema} MetricName="{m.RETRIES}" {m.JOBS_DIMENSION}="',
        job_table_name,
        f"\"', 'Sum', {MINUTE})",
    )


def widgets(sources: DashboardSources) -> list[dict[str, Any]]:
    """Three rows of two: work in hand, outcomes, time."""
    return [
        _graph(
            "Jobs waiting and holding a task (each minute)",
            [
                _jobs_metric(sources, m.JOBS_WAITING, label="waiting"),
                _jobs_metric(sources, m.JOBS_RUNNING, label="task pending or running"),
            ],
            sources,
            stat="Maximum",
            period=MINUTE,
            position=(0, 0),
        ),
        _graph(
            "Jobs finished per minute",
            [
                _jobs_metric(sources, m.JOBS_SUCCEEDED, label="succeeded"),
                _jobs_metric(sources, m.JOBS_FAILED, label="failed (in the failed-jobs queue)"),
            ],
            sources,
            stat="Sum",
            period=MINUTE,
            position=(WIDTH, 0),
        ),
        _graph(
            "Retries per minute, by cause",
            [[{"expression": retries_by_cause_search(sources.job_table_name), "id": "retries"}]],
            sources,
            stat="Sum",
            period=MINUTE,
            position=(0, HEIGHT),
        ),
        _graph(
            "Oldest wait (seconds)",
            [
                _jobs_metric(sources, m.OLDEST_WAIT, label="oldest waiting job"),
                [
                    "AWS/SQS",
                    "ApproximateAgeOfOldestMessage",
                    "QueueName",
                    sources.backlog_queue_name,
                    {"label": "oldest upload in the backlog queue"},
                ],
            ],
            sources,
            stat="Maximum",
            period=MINUTE,
            position=(WIDTH, HEIGHT),
            extra={
                "annotations": {
                    "horizontal": [
                        {"label": "backlog-age alarm", "value": sources.backlog_age_alarm_seconds}
                    ]
                }
            },
        ),
        _graph(
            "Task duration (seconds)",
            [
                _jobs_metric(sources, m.TASK_DURATION, stat="p50", label="p50"),
                _jobs_metric(sources, m.TASK_DURATION, stat="p95", label="p95"),
            ],
            sources,
            stat="p50",
            period=FIVE_MINUTES,
            position=(0, 2 * HEIGHT),
        ),
        _graph(
            "Runner Lambda per minute",
            [
                ["AWS/Lambda", metric, "FunctionName", sources.runner_function_name]
                for metric in ("Invocations", "Errors", "Throttles")
            ],
            sources,
            stat="Sum",
            period=MINUTE,
            position=(WIDTH, 2 * HEIGHT),
        ),
    ]


def dashboard_body(sources: DashboardSources) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"widgets": widgets(sources)})
