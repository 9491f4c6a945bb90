"""Partition, region and account of the deploying credentials, read from the provider.

Nothing region- or account-specific is written into the program: every ARN is built from these,
so the same code deploys unchanged to any region, account or partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AwsContext:
    partition: pulumi.Output[str]
    region: pulumi.Output[str]
    account_id: pulumi.Output[str]

    def arn(self, service: str, resource: pulumi.Input[str]) -> pulumi.Output[str]:
        """arn:<partition>:<service>:<region>:<account>:<resource>."""
        return pulumi.Output.concat(
            "arn:", self.partition, ":", service, ":", self.region, ":", self.account_id, ":",
            resource,
        )  # fmt: skip


def current_aws_context() -> AwsContext:
    return AwsContext(
        partition=aws.get_partition_output().partition,
        region=aws.get_region_output().region,
        account_id=aws.get_caller_identity_output().account_id,
    )
