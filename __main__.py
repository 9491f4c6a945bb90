"""s3-fargate-jobs: run a Fargate task for every file uploaded to S3.

This file only wires: read the stack's settings, build one component per concern, export.
"""

from pathlib import Path

import pulumi

from infra.aws_context import current_aws_context
from infra.cluster import JobCluster
from infra.config import load_settings
from infra.image import TaskImage
from infra.job import CONTAINER_NAME, JobDefinition
from infra.monitoring import FailureMonitoring
from infra.network import Network
from infra.runner import JobTarget, TaskRunner
from infra.storage import UploadBucket

settings = load_settings()
context = current_aws_context()
prefix = settings.name_prefix

uploads = UploadBucket(f"{prefix}-uploads", settings)
network = Network(f"{prefix}-network", settings)
image = TaskImage(f"{prefix}-image", settings, context_dir=Path("task"))
cluster = JobCluster(f"{prefix}-cluster", settings)
job = JobDefinition(
    f"{prefix}-job",
    settings,
    context,
    image=image.image_digest_uri,
    repository_arn=image.repository.arn,
    bucket_arn=uploads.bucket.arn,
)
runner = TaskRunner(
    f"{prefix}-runner",
    settings,
    context,
    source_dir=Path("taskrunner"),
    bucket=uploads.bucket,
    bucket_configured=uploads.configured,
    target=JobTarget(
        cluster_arn=cluster.cluster.arn,
        cluster_name=cluster.cluster.name,
        cluster_ready=cluster.capacity_providers,
        task_definition_arn=job.task_definition.arn,
        container_name=CONTAINER_NAME,
        role_arns=(job.execution_role.arn, job.task_role.arn),
        subnet_ids=network.subnet_ids,
        security_group_id=network.security_group_id,
    ),
)
monitoring = FailureMonitoring(
    f"{prefix}-monitoring",
    settings,
    context,
    cluster_arn=cluster.cluster.arn,
    runner_function_name=runner.function.name,
    runner_dead_letter_queue=runner.dead_letter_queue,
    backlog_queue=runner.backlog_queue,
    job_log_group_name=job.log_group.name,
)

pulumi.export("bucketName", uploads.bucket.bucket)
pulumi.export("uploadPrefix", settings.upload_prefix)
pulumi.export("resultPrefix", settings.result_prefix)
pulumi.export("clusterArn", cluster.cluster.arn)
pulumi.export("taskDefinitionArn", job.task_definition.arn)
pulumi.export("taskRunnerFunctionName", runner.function.name)
pulumi.export("logGroupName", job.log_group.name)
pulumi.export("deadLetterQueueUrl", runner.dead_letter_queue.url)
pulumi.export("backlogQueueUrl", runner.backlog_queue.url)
pulumi.export("maxConcurrentTasks", settings.max_concurrent_tasks)
pulumi.export("repositoryUrl", image.repository.repository_url)
pulumi.export("failedJobsQueueUrl", monitoring.failed_jobs_queue.url)
pulumi.export("alertTopicArn", monitoring.alert_topic.arn)
