"""The whole system as one component: add it to any Pulumi program.

    from s3_fargate_jobs import S3FargateJobs, S3FargateJobsArgs

    jobs = S3FargateJobs("media", S3FargateJobsArgs(task_cpu=1024, task_memory=2048))
    pulumi.export("bucket", jobs.bucket_name)

Children: the upload bucket (or an existing one), the network (or an existing VPC), the job's
image, cluster and task definition, the runner with its job table and backlog, the rules that
drive it (a task stopped, the sweep), and the monitoring. Every argument is validated before
anything is declared, as the stack's config is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pulumi
import pulumi_aws as aws

from .args import ExistingNotifications, S3FargateJobsArgs
from .aws_context import AwsContext, current_aws_context
from .cluster import JobCluster
from .config import (
    ARGS_NAMING,
    ConfigError,
    Settings,
    check_processor_in_default_image,
    naming,
    parse_settings,
)
from .image import TaskImage
from .job import CONTAINER_NAME, JobDefinition
from .monitoring import FailureMonitoring
from .network import Network
from .runner import JobTarget, TaskRunner, UploadSource
from .scheduling import JobScheduling
from .sources import DEFAULT_JOB_IMAGE, bundled
from .storage import UploadBucket


def validate(name: str, args: S3FargateJobsArgs) -> Settings:
    """The arguments checked by the config's own rules; messages name the arguments."""
    if args.bucket_name is not None and args.existing_bucket_notifications is None:
        raise ConfigError(
            f"S3FargateJobsArgs.bucket_name = {args.bucket_name!r} needs "
            "existing_bucket_notifications: S3 keeps one notification configuration per bucket, "
            "and the component writes it. Pass ExistingNotifications() if the bucket notifies "
            "nothing else, or list its other targets there so they are kept."
        )
    notifications = args.existing_bucket_notifications
    if args.bucket_name is None and notifications is not None and notifications.says_anything:
        raise ConfigError(
            "S3FargateJobsArgs.existing_bucket_notifications describes an existing bucket, but "
            "bucket_name is not set: the bucket the component creates notifies the runner only, "
            "with EventBridge off. Set bucket_name to the bucket they belong to, or leave "
            "existing_bucket_notifications out."
        )
    with naming(ARGS_NAMING):
        settings = parse_settings(
            args.to_config(), project=pulumi.get_project(), stack=pulumi.get_stack()
        )
        check_processor_in_default_image(settings, bundled(DEFAULT_JOB_IMAGE))
    return dataclasses.replace(settings, name=name, existing_bucket=args.bucket_name)


def image_context(settings: Settings) -> Path:
    """The folder the job's image is built from; a user's folder must hold a Dockerfile."""
    if settings.image_context is None:
        return bundled(DEFAULT_JOB_IMAGE)
    folder = Path(settings.image_context)
    if not (folder / "Dockerfile").is_file():
        raise ConfigError(
            f"taskImageContext = {settings.image_context!r} is not a folder with a Dockerfile "
            f"(looked in {folder.resolve()}); give a folder relative to the project, or empty "
            "for the job image built from task/"
        )
    return folder


class S3FargateJobs(pulumi.ComponentResource):
    """Run a Fargate task for every file uploaded under a prefix of an S3 bucket."""

    bucket_name: pulumi.Output[str]
    upload_prefix: str
    result_prefix: str
    cluster_arn: pulumi.Output[str]
    task_definition_arn: pulumi.Output[str]
    task_runner_function_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    backlog_queue_url: pulumi.Output[str]
    max_concurrent_tasks: int
    repository_url: pulumi.Output[str]
    failed_jobs_queue_url: pulumi.Output[str]
    alert_topic_arn: pulumi.Output[str]
    job_table_name: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: S3FargateJobsArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        args = args or S3FargateJobsArgs()
        settings = validate(name, args)  # before anything is declared
        super().__init__("s3fargatejobs:index:S3FargateJobs", name, None, opts)
        context = current_aws_context()
        child = pulumi.ResourceOptions(parent=self)

        uploads = self._uploads(name, settings, context, args.existing_bucket_notifications)
        network = Network(f"{name}-network", settings, opts=child)
        image = TaskImage(
            f"{name}-image", settings, context_dir=image_context(settings), opts=child
        )
        cluster = JobCluster(f"{name}-cluster", settings, opts=child)
        job = JobDefinition(
            f"{name}-job",
            settings,
            context,
            image=image.image_digest_uri,
            repository_arn=image.repository.arn,
            bucket_arn=uploads.arn,
            opts=child,
        )
        # Monitoring first: the runner reports failed jobs to its queue. The alarms and the
        # dashboard, which watch the runner, come once the runner exists (`watch`).
        monitoring = FailureMonitoring(f"{name}-monitoring", settings, context, opts=child)
        runner = TaskRunner(
            f"{name}-runner",
            settings,
            context,
            source_dir=bundled("taskrunner"),
            bucket=uploads,
            target=JobTarget(
                cluster_arn=cluster.cluster.arn,
                cluster_name=cluster.cluster.name,
                cluster_ready=cluster.capacity_providers,
                task_definition_arn=job.task_definition.arn,
                container_name=CONTAINER_NAME,
                role_arns=(job.execution_role.arn, job.task_role.arn),
                subnet_ids=network.subnet_ids,
                security_group_id=network.security_group_id,
                log_group_name=job.log_group.name,
            ),
            failed_jobs_queue=monitoring.failed_jobs_queue,
            opts=child,
        )
        scheduling = JobScheduling(
            f"{name}-scheduling",
            settings,
            context,
            cluster_arn=cluster.cluster.arn,
            runner=runner.function,
            undeliverable_queue=monitoring.undeliverable_queue,
            opts=child,
        )
        monitoring.watch(
            runner_function_name=runner.function.name,
            runner_dead_letter_queue=runner.dead_letter_queue,
            backlog_queue=runner.backlog_queue,
            job_table_name=runner.job_table.name,
            event_rule_arns=scheduling.rule_arns,
        )

        self.bucket_name = pulumi.Output.from_input(uploads.name)
        self.upload_prefix = settings.upload_prefix
        self.result_prefix = settings.result_prefix
        self.cluster_arn = cluster.cluster.arn
        self.task_definition_arn = job.task_definition.arn
        self.task_runner_function_name = runner.function.name
        self.log_group_name = job.log_group.name
        self.dead_letter_queue_url = runner.dead_letter_queue.url
        self.backlog_queue_url = runner.backlog_queue.url
        self.max_concurrent_tasks = settings.max_concurrent_tasks
        self.repository_url = image.repository.repository_url
        self.failed_jobs_queue_url = monitoring.failed_jobs_queue.url
        self.alert_topic_arn = monitoring.alert_topic.arn
        self.job_table_name = runner.job_table.name
        self.dashboard_url = monitoring.dashboard_url
        self.register_outputs(
            {
                "bucketName": self.bucket_name,
                "clusterArn": self.cluster_arn,
                "taskDefinitionArn": self.task_definition_arn,
                "taskRunnerFunctionName": self.task_runner_function_name,
                "backlogQueueUrl": self.backlog_queue_url,
                "deadLetterQueueUrl": self.dead_letter_queue_url,
                "failedJobsQueueUrl": self.failed_jobs_queue_url,
                "jobTableName": self.job_table_name,
                "dashboardUrl": self.dashboard_url,
            }
        )

    def _uploads(
        self,
        name: str,
        settings: Settings,
        context: AwsContext,
        others: ExistingNotifications | None,
    ) -> UploadSource:
        """The bucket to watch: created, or the existing one, which must share the region."""
        if settings.existing_bucket is None:
            created = UploadBucket(
                f"{name}-uploads", settings, opts=pulumi.ResourceOptions(parent=self)
            )
            return UploadSource(created.bucket.id, created.bucket.arn, created.configured)
        existing = aws.s3.get_bucket_output(bucket=settings.existing_bucket)
        bucket_name = settings.existing_bucket

        def same_region(regions: list[str]) -> str:
            bucket_region, region = regions
            if bucket_region != region:
                raise ConfigError(
                    f"S3FargateJobsArgs.bucket_name = {bucket_name!r} is in {bucket_region}, "
                    f"the stack in {region}: S3 notifies a Lambda in the bucket's own region "
                    "only; deploy the stack there"
                )
            return bucket_name

        checked = pulumi.Output.all(existing.region, context.region).apply(same_region)
        return UploadSource(checked, existing.arn, (), others or ExistingNotifications())
