"""The queues where work that could not start waits for a person: encrypted, kept 14 days."""

from __future__ import annotations

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
