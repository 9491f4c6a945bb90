"""Failures are told to a person: the failed-jobs queue, alarms, and the jobs' dashboard.

The runner sends a job that failed for good to the failed-jobs queue itself, once, with every
attempt (taskrunner/reports.py); a retried attempt never lands there. The component is built in
two steps, because the runner needs that queue's URL and the alarms need the runner: first the
queues and the alert topic, then `watch()` adds the alarms and the dashboard. Both steps' children
are this component's, with the names they always had, so a deployed stack keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from . import runner_metrics
from .aws_context import AwsContext
from .config import Settings
from .dashboard import DashboardSources, dashboard_body, dashboard_name, dashboard_url
from .queues import holding_queue

# CloudWatch evaluates the in-progress minute too, before the sweep's line for it has arrived
# (EMF metrics come through CloudWatch Logs, seconds to a minute late), and a scheduled rule
# fires anywhere within its minute, so one minute may go without a datapoint: the backlog-age
# alarm wants three breaching minutes in a row. A real wait over the limit raises it two minutes
# later than it crossed; a sweep that fell silent, three minutes after its last line.
BACKLOG_ALARM_PERIOD_SECONDS = 60
BACKLOG_ALARM_PERIODS = 3


@dataclass(frozen=True)
class WaitMetric:
    """A metric saying, in seconds, how long the oldest upload still waiting has waited."""

    query_id: str  # its name in the alarm's expression: a lowercase letter first
    namespace: str
    metric: str
    dimensions: Mapping[str, pulumi.Input[str]]
    # What a period without a datapoint means. False: nothing waits there (SQS publishes the
    # age only while the queue holds messages). True: whatever writes it stopped (the sweep
    # writes its line every minute, also when nothing waits), so the jobs wait unwatched.
    silence_breaches: bool = False


def backlog_wait_metrics(
    backlog_queue_name: pulumi.Input[str], job_table_name: pulumi.Input[str]
) -> list[WaitMetric]:
    """Every source of the oldest wait; the alarm fires on the largest."""
    return [
        # Uploads the job table could not take, parked in the backlog queue: SQS's own metric.
        WaitMetric(
            "queue", "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": backlog_queue_name}
        ),
        # Jobs waiting in the table for a slot: the sweep's metric, written every minute.
        WaitMetric(
            "jobs",
            runner_metrics.NAMESPACE,
            runner_metrics.OLDEST_WAIT,
            {runner_metrics.JOBS_DIMENSION: job_table_name},
            silence_breaches=True,
        ),
    ]


def oldest_wait_expression(metrics: Sequence[WaitMetric], threshold_seconds: int) -> str:
    """The largest age any source reports. A period without data counts as no wait where
    silence means nothing waits, and as a wait over the threshold where it means nobody is
    watching the jobs: uploads waiting with the sweep down raise the alarm as if overdue."""
    filled = [
        f"FILL({m.query_id}, {threshold_seconds + 1 if m.silence_breaches else 0})" for m in metrics
    ]
    return "MAX([" + ", ".join(filled) + "])"


class FailureMonitoring(pulumi.ComponentResource):
    failed_jobs_queue: aws.sqs.Queue
    # What EventBridge could not deliver to the runner (a task's stop, the sweep), kept 14 days.
    undeliverable_queue: aws.sqs.Queue
    alert_topic: aws.sns.Topic
    dashboard_url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        *,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:FailureMonitoring", name, None, opts)
        self._name = name
        self._settings = settings
        self._context = context
        self._tags = dict(settings.tags)
        child = pulumi.ResourceOptions(parent=self)

        # Protected like the dead-letter queue: it may hold failures waiting for a redrive.
        self.failed_jobs_queue = holding_queue(
            f"{name}-failed-jobs",
            self._tags,
            pulumi.ResourceOptions(parent=self, protect=settings.protect),
        )
        self.undeliverable_queue = holding_queue(f"{name}-undeliverable", self._tags, child)

        key = aws.kms.Key(
            f"{name}-alerts",
            description="Encrypts the alert topic; CloudWatch alarms may publish through it",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=alert_key_policy(context),
            tags=self._tags,
            opts=child,
        )
        self.alert_topic = aws.sns.Topic(
            f"{name}-alerts", kms_master_key_id=key.arn, tags=self._tags, opts=child
        )
        if settings.alert_email:
            aws.sns.TopicSubscription(
                f"{name}-alert-email",
                topic=self.alert_topic.arn,
                protocol="email",
                endpoint=settings.alert_email,
                opts=child,
            )

    def watch(
        self,
        *,
        runner_function_name: pulumi.Input[str],
        runner_dead_letter_queue: aws.sqs.Queue,
        backlog_queue: aws.sqs.Queue,
        job_table_name: pulumi.Input[str],
        event_rule_arns: Sequence[pulumi.Input[str]],
    ) -> None:
        """The alarms and the dashboard, once the runner and its rules exist; and the
        undeliverable queue's policy, which names those rules."""
        name, settings, tags = self._name, self._settings, self._tags
        child = pulumi.ResourceOptions(parent=self)

        # An SQS dead-letter target of a rule is authorised by the queue's policy, not a role.
        aws.sqs.QueuePolicy(
            f"{name}-undeliverable-from-eventbridge",
            queue_url=self.undeliverable_queue.url,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "FromTheJobsRulesOnly",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": self.undeliverable_queue.arn,
                            "Condition": {"ArnEquals": {"aws:SourceArn": list(event_rule_arns)}},
                        }
                    ],
                }
            ),
            opts=child,
        )

        queues = {
            "runner_dlq": runner_dead_letter_queue.name,
            "failed_jobs": self.failed_jobs_queue.name,
            "undeliverable": self.undeliverable_queue.name,
        }

        def alarm_when_any(
            suffix: str,
            description: str,
            label: str,
            metrics: dict[str, tuple[str, str, dict[str, pulumi.Input[str]], str]],
        ) -> None:
            """An alarm as soon as the sum of `metrics` is above zero for one minute."""
            aws.cloudwatch.MetricAlarm(
                f"{name}-{suffix}",
                alarm_description=description,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                metric_queries=[
                    *(_metric(query_id, *metric) for query_id, metric in metrics.items()),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="total", expression=" + ".join(metrics), label=label, return_data=True
                    ),
                ],
                alarm_actions=[self.alert_topic.arn],
                tags=tags,
                opts=child,
            )

        alarm_when_any(
            "work-waiting",
            "Work waits for a person: the runner's dead-letter queue or the failed-jobs queue "
            "holds messages (inspect and replay with `python -m jobctl redrive`), or EventBridge "
            "could not deliver a task's stop or the sweep to the runner (the undeliverable "
            "queue: check the runner's permissions and state).",
            "Messages waiting",
            {
                query_id: (
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": queue},
                    "Maximum",
                )
                for query_id, queue in queues.items()
            },
        )
        function = {"FunctionName": runner_function_name}
        alarm_when_any(
            "runner-failing",
            "The runner Lambda reports errors or throttles: uploads are being retried and may "
            "reach the dead-letter queue; or an event that failed every retry could not be put "
            "in the dead-letter queue and is lost. Check its log group.",
            "Errors, throttles and lost events",
            {
                "errors": ("AWS/Lambda", "Errors", function, "Sum"),
                "throttles": ("AWS/Lambda", "Throttles", function, "Sum"),
                # Lambda's only trace of an on-failure record it could not deliver (permissions,
                # size): the upload is then gone ("Capturing records of asynchronous invocations").
                "undelivered": ("AWS/Lambda", "DestinationDeliveryFailures", function, "Sum"),
            },
        )
        backlog_age_alarm(
            f"{name}-backlog-age",
            settings.backlog_age_alarm_minutes,
            backlog_wait_metrics(backlog_queue.name, job_table_name),
            topic_arn=self.alert_topic.arn,
            tags=tags,
            opts=child,
        )

        board = dashboard_name(settings.name_prefix)
        aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=board,
            dashboard_body=dashboard_body(
                DashboardSources(
                    region=self._context.region,
                    job_table_name=job_table_name,
                    backlog_queue_name=backlog_queue.name,
                    runner_function_name=runner_function_name,
                    backlog_age_alarm_seconds=settings.backlog_age_alarm_minutes * 60,
                )
            ),
            opts=child,
        )
        self.dashboard_url = dashboard_url(self._context.region, board)
        self.register_outputs(
            {
                "failedJobsQueueUrl": self.failed_jobs_queue.url,
                "alertTopicArn": self.alert_topic.arn,
                "dashboardUrl": self.dashboard_url,
            }
        )


def backlog_age_alarm(
    name: str,
    minutes: int,
    metrics: Sequence[WaitMetric],
    *,
    topic_arn: pulumi.Input[str],
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.cloudwatch.MetricAlarm:
    """An alarm when the oldest waiting upload, by the largest of `metrics`, has waited more
    than `minutes`, or when the jobs wait with nobody watching them; and word again when the
    wait is back under that age."""
    threshold = minutes * 60
    return aws.cloudwatch.MetricAlarm(
        name,
        alarm_description=(
            f"An upload has waited more than {minutes} minutes for a task: a batch is bigger "
            "than the account's Fargate quota or maxConcurrentTasks lets run at once, and it "
            "drains by itself (`python -m jobctl status` shows how far it has come); or "
            "nothing starts the waiting jobs: the runner's sweep wrote no metric for three "
            "minutes (check the runner's errors, its schedule rule and the job table), or the "
            "backlog queue is not consumed (its event source mapping)."
        ),
        metric_queries=[
            *(
                _metric(
                    m.query_id,
                    m.namespace,
                    m.metric,
                    m.dimensions,
                    "Maximum",
                    period=BACKLOG_ALARM_PERIOD_SECONDS,
                )
                for m in metrics
            ),
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="oldest",
                expression=oldest_wait_expression(metrics, threshold),
                label="Oldest upload's wait (s)",
                return_data=True,
            ),
        ],
        evaluation_periods=BACKLOG_ALARM_PERIODS,
        datapoints_to_alarm=BACKLOG_ALARM_PERIODS,
        comparison_operator="GreaterThanThreshold",
        threshold=threshold,
        # The sweep writes every minute, so no data at all means it stopped: breaching, as the
        # FILL in the expression makes each of its silent minutes.
        treat_missing_data="breaching",
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        tags=tags,
        opts=opts,
    )


def _metric(
    query_id: str,
    namespace: str,
    metric: str,
    dimensions: Mapping[str, pulumi.Input[str]],
    statistic: str,
    *,
    period: int = 60,
) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
    return aws.cloudwatch.MetricAlarmMetricQueryArgs(
        id=query_id,
        return_data=False,
        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
            namespace=namespace,
            metric_name=metric,
            dimensions=dict(dimensions),
            period=period,
            stat=statistic,
        ),
    )


def alert_key_policy(context: AwsContext) -> pulumi.Output[str]:
    # A key policy's Resource "*" means "this key": AWS accepts nothing else there.
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AccountAdministersTheKeyThroughIam",
            "Effect": "Allow",
            "Principal": {
                "AWS": pulumi.Output.concat(
                    "arn:", context.partition, ":iam::", context.account_id, ":root"
                )
            },
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "CloudWatchAlarmsPublishToTheTopic",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": context.account_id}},
        },
    ]
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})
