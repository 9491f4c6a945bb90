"""The jobs' dashboard graphs what the runner really writes, under this stack's job table."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from typing import Any, cast

from jobctl.evaluate import DeclaredResource, Evaluation
from tests.infra.conftest import TASKRUNNER_DIR, as_json

if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))

import reports
from job_record import Attempt, Job
from runner_settings import load_settings
from services import Services
from sweep import Sweep

DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
NOW = 1_795_000_000.0
# One metric as CloudWatch knows it: namespace, name, dimensions.
Metric = tuple[str, str, frozenset[tuple[str, str]]]


def dashboard(stack: Evaluation) -> DeclaredResource:
    return stack.one(DASHBOARD)


def graphs(stack: Evaluation) -> list[dict[str, Any]]:
    widgets: list[dict[str, Any]] = as_json(dashboard(stack).inputs["dashboardBody"])["widgets"]
    return widgets


def emitted(lines: list[str]) -> set[Metric]:
    """The metrics embedded-metric-format lines make, as CloudWatch Logs extracts them."""
    found = set()
    for line in lines:
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                values = frozenset((name, document[name]) for name in dimensions)
                for metric in directive["Metrics"]:
                    found.add((directive["Namespace"], metric["Name"], values))
    return found


def attempt(**fields: Any) -> Attempt:
    return Attempt(number=1, claim=1, provider="FARGATE_SPOT", claimed_at=NOW, **fields)


def job(state: Any, last: Attempt) -> Job:
    return Job(
        bucket="b", key="k", job_id="0a1b2c3d", state=state, version=2, recorded_at=NOW,
        attempts=(last,), attempt_count=1,
    )  # fmt: skip


def what_the_runner_writes(stack: Evaluation, dynamodb: Any) -> set[Metric]:
    """Every metric the runner's own code writes, with the environment this stack declares:
    a job's end (succeeded, failed, retried) and a sweep of the table the program declares."""
    env = stack.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    settings = load_settings(dict(env))
    lines: list[str] = []
    # An empty table gives the sweep nothing to ask ECS: no client is needed.
    services = Services(
        cast(Any, None),
        dynamodb=dynamodb,
        clock=lambda: NOW,
        emit_metric=lines.append,
    )
    store = services.job_store(settings)
    reporter = reports.Reporter(store, settings, services)
    ran = {"started_at": NOW + 30, "stopped_at": NOW + 90}
    reporter.ended(job("succeeded", attempt(cause="succeeded", exit_code=0, **ran)))
    reporter.ended(job("failed", attempt(cause="job-failure", exit_code=1, **ran)))
    reporter.ended(job("waiting", attempt(cause="spot-interruption", **ran)))
    # A retry waiting for its delay: the sweep counts it (and, with nothing waiting, would
    # write the oldest wait alone) but starts nothing.
    later = replace(job("waiting", attempt(cause="spot-interruption", **ran)), retry_at=NOW + 600)
    store.create(later)
    store.count(recorded=1)
    Sweep(settings, services).run()
    return emitted(lines)


def plotted(stack: Evaluation) -> set[Metric]:
    """Every metric a graph names directly: [namespace, name, dimension, value, ..., options]."""
    found = set()
    for widget in graphs(stack):
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):
                continue  # an expression
            fields = [item for item in row if not isinstance(item, dict)]
            namespace, name, *pairs = fields
            dimensions = frozenset(zip(pairs[::2], pairs[1::2], strict=True))
            found.add((namespace, name, dimensions))
    return found


def searched(stack: Evaluation) -> list[tuple[str, set[str], str, dict[str, str]]]:
    """Every SEARCH a graph runs: (namespace, dimension names, metric name, exact values)."""
    found = []
    for widget in graphs(stack):
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict) and "expression" in row[0]:
                matched = re.fullmatch(
                    r"SEARCH\('\{([^}]*)\} (.*)', '(\w+)', (\d+)\)", row[0]["expression"]
                )
                assert matched, row[0]["expression"]
                namespace, *dimensions = matched[1].split(",")
                terms = dict(re.findall(r'(\w+)="([^"]*)"', matched[2]))
                found.append((namespace, set(dimensions), terms.pop("MetricName"), terms))
    return found


def test_every_metric_the_runner_writes_is_on_the_dashboard_and_nothing_else_of_its_namespace(
    dev: Evaluation, declared_table_on_moto: tuple[Any, str]
) -> None:
    client, table = declared_table_on_moto
    written = what_the_runner_writes(dev, client)
    names = {name for _, name, _ in written}
    assert {
        "JobsSucceeded",
        "JobsFailed",
        "TaskDurationSeconds",
        "Retries",
        "OldestWaitSeconds",
        "JobsWaiting",
        "JobsRunning",
    } <= names
    on_board = plotted(dev)
    searches = searched(dev)
    for namespace, name, dimensions in written:
        assert dict(dimensions)[reports.METRIC_DIMENSION] == table
        if (namespace, name, dimensions) in on_board:
            continue
        # Retries carry a Cause each: one SEARCH finds them all, for this table only.
        assert (
            namespace,
            {n for n, _ in dimensions},
            name,
            {reports.METRIC_DIMENSION: table},
        ) in searches, name
    ours = {m for m in on_board if m[0] == reports.METRIC_NAMESPACE}
    assert ours - written == set(), "a graph of a metric the runner does not write"


def test_the_dashboard_shows_waiting_running_outcomes_retries_oldest_wait_and_durations(
    dev: Evaluation,
) -> None:
    metrics = {
        widget["properties"]["title"]: widget["properties"]["metrics"] for widget in graphs(dev)
    }
    stats = {
        (row[1], row[-1].get("stat"))
        for rows in metrics.values()
        for row in rows
        if not isinstance(row[0], dict) and isinstance(row[-1], dict)
    }
    assert {("TaskDurationSeconds", "p50"), ("TaskDurationSeconds", "p95")} <= stats
    per_minute = [w["properties"] for w in graphs(dev) if "JobsSucceeded" in str(w)]
    assert [(p["stat"], p["period"]) for p in per_minute] == [("Sum", 60)]


def test_the_oldest_wait_graph_marks_the_age_the_alarm_fires_at(stack: Evaluation) -> None:
    (oldest,) = [w["properties"] for w in graphs(stack) if "OldestWaitSeconds" in str(w)]
    minutes = int(stack.config["s3-fargate-jobs:backlogAgeAlarmMinutes"])
    assert [line["value"] for line in oldest["annotations"]["horizontal"]] == [minutes * 60]
    # Beside the sweep's, SQS's age of the backlog queue: uploads the table could not take.
    backlog = stack.named("aws:sqs/queue:Queue", "-backlog").outputs["name"]
    assert ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", backlog] in [
        row[:4] for row in oldest["metrics"]
    ]


def test_the_dashboards_address_is_a_stack_output_in_the_stacks_region(stack: Evaluation) -> None:
    name = dashboard(stack).inputs["dashboardName"]
    assert name == f"s3-fargate-jobs-{stack.stack}"
    assert stack.outputs["dashboardUrl"] == (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
        f"#dashboards:name={name}"
    )
    assert {widget["properties"]["region"] for widget in graphs(stack)} == {"us-east-1"}


def test_the_graphs_fit_the_dashboards_24_columns_without_overlapping(stack: Evaluation) -> None:
    taken: set[tuple[int, int]] = set()
    for widget in graphs(stack):
        x, y, width, height = (int(widget[k]) for k in ("x", "y", "width", "height"))
        assert x + width <= 24
        cells = {(x + i, y + j) for i in range(width) for j in range(height)}
        assert not cells & taken, widget["properties"]["title"]
        taken |= cells
