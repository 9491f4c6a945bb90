"""A user's own Pulumi program that adds the component: an existing bucket and an existing VPC.

It imports the component from the package named by COMPONENT_PACKAGE: `s3_fargate_jobs` when the
test installed the wheel this repository builds, `infra` (the same code) from the repository.
"""

import importlib
import os

import pulumi
import pulumi_aws as aws

package = importlib.import_module(os.environ.get("COMPONENT_PACKAGE", "infra"))
config = pulumi.Config()

# What the team's bucket already notifies: an audit queue for deletions. It must be kept.
audit = aws.s3.BucketNotificationQueueArgs(
    queue_arn="arn:aws:sqs:us-east-1:123456789012:media-audit",
    events=["s3:ObjectRemoved:*"],
)
jobs = package.S3FargateJobs(
    "media",
    package.S3FargateJobsArgs(
        bucket_name=config.get("bucket") or "team-media",
        existing_bucket_notifications=(
            None
            if config.get_bool("forgetNotifications")
            else package.ExistingNotifications(
                queues=[audit],
                eventbridge=config.get_bool("eventbridge") or False,
                retain_on_delete=config.get_bool("retainNotifications") or False,
            )
        ),
        vpc_id="vpc-0a1b2c3d4e5f67890",
        subnet_ids=["subnet-0aaa1111", "subnet-0bbb2222"],
        upload_prefix="incoming/",
        result_prefix="processed/",
        task_cpu=1024,
        task_memory=2048,
        task_environment={"MODEL": "small"},
    ),
)
pulumi.export("bucket", jobs.bucket_name)
pulumi.export("backlog", jobs.backlog_queue_url)
