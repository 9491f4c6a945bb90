"""The queues where work waits: for a person (dead letters, failed jobs), or for capacity (the
backlog). All encrypted, all keeping their messages 14 days."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.config import QUEUE_RETENTION_DAYS


def holding_queue(name: str, tags: dict[str, str], opts: pulumi.ResourceOptions) -> aws.sqs.Queue:
    """An SSE-encrypted queue keeping its messages as long as SQS allows, for a redrive."""
    return aws.sqs.Queue(
        name,
        message_retention_seconds=QUEUE_RETENTION_DAYS * 24 * 3600,
        sqs_managed_sse_enabled=True,
        tags=tags,
        opts=opts,
    )


def backlog_queue(
    name: str,
    *,
    visibility_timeout_seconds: int,
    dead_letter_queue: aws.sqs.Queue,
    max_receive_count: int,
    tags: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.sqs.Queue:
    """Where uploads wait for capacity; after `max_receive_count` receives, the dead letters."""
    return aws.sqs.Queue(
        name,
        message_retention_seconds=QUEUE_RETENTION_DAYS * 24 * 3600,
        visibility_timeout_seconds=visibility_timeout_seconds,
        sqs_managed_sse_enabled=True,
        redrive_policy=dead_letter_queue.arn.apply(
            lambda arn: json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count}
            )
        ),
        tags=tags,
        opts=opts,
    )
