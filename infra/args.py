"""The component's typed arguments: the stack configuration's keys, as one dataclass.

Each field is a configuration key in snake_case (`taskCpu` -> `task_cpu`), with the same default
as Pulumi.yaml: a safe, cheap deployment. Two more fields exist only here, for a bucket the
user already has. The component validates them with the same rules as the stack's config.
`load_args()` is this program's way in: the stack's config, validated, as these arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .config import (
    CONFIG_KEYS,
    CapacityProvider,
    CpuArchitecture,
    NetworkMode,
    Settings,
    argument_name,
    load_settings,
)

if TYPE_CHECKING:
    import pulumi_aws as aws


@dataclass(frozen=True)
class ExistingNotifications:
    """What an existing bucket already notifies. S3 keeps one notification configuration per
    bucket: the component writes it with these targets kept beside its own trigger.

    `eventbridge`: the bucket sends its events to EventBridge. The flag is part of the same
    configuration, so unless it is stated here the component switches that delivery off.
    `retain_on_delete`: leave the configuration in place when the component is destroyed. The
    provider's delete otherwise writes an empty configuration, removing these targets and the
    EventBridge flag along with the trigger. Retained, the trigger still names the deleted
    function: remove it when the bucket's configuration is next written.
    """

    lambda_functions: Sequence[aws.s3.BucketNotificationLambdaFunctionArgs] = ()
    queues: Sequence[aws.s3.BucketNotificationQueueArgs] = ()
    topics: Sequence[aws.s3.BucketNotificationTopicArgs] = ()
    eventbridge: bool = False
    retain_on_delete: bool = False

    @property
    def says_anything(self) -> bool:
        """Whether these describe anything beyond "the bucket notifies nothing else"."""
        return bool(
            self.lambda_functions
            or self.queues
            or self.topics
            or self.eventbridge
            or self.retain_on_delete
        )


@dataclass(frozen=True)
class S3FargateJobsArgs:
    """Everything that shapes the system; every default is Pulumi.yaml's."""

    # Where uploads come from.
    bucket_name: str | None = None  # an existing bucket; None creates one
    existing_bucket_notifications: ExistingNotifications | None = None  # with bucket_name
    upload_prefix: str = "uploads/"
    upload_suffixes: Sequence[str] = ()
    result_prefix: str = "results/"
    # Where tasks run.
    network_mode: NetworkMode = "public"
    vpc_id: str = ""  # an existing VPC, with subnet_ids; "" creates one
    subnet_ids: Sequence[str] = ()
    # The job.
    task_image_context: str = ""  # a folder with its own Dockerfile; "" builds task/
    task_processor: str = ""  # module:function for the default image; "" runs the default
    task_environment: Mapping[str, str] = field(default_factory=dict)
    task_secrets: Mapping[str, str] = field(default_factory=dict)  # NAME -> where it lives
    task_secrets_kms_key_arns: Sequence[str] = ()
    task_cpu: int = 256
    task_memory: int = 512
    cpu_architecture: CpuArchitecture = "X86_64"
    ephemeral_storage_gib: int = 0  # 0: Fargate's 20 GiB
    capacity_provider: CapacityProvider = "FARGATE"
    task_timeout_minutes: int = 0  # 0: no limit
    max_concurrent_tasks: int = 0  # 0: only the account's own limits
    # What happens when a task stops without success, and how long a job may wait.
    task_max_attempts: int = 3  # Spot interruptions, failed starts, ... retried up to this
    task_retry_exit_codes: Sequence[int] = ()  # job failures worth another attempt
    task_retry_timeouts: bool = False
    spot_fallback_to_on_demand: bool = False  # with FARGATE_SPOT: after an interruption, FARGATE
    wait_timeout_minutes: int = 20160  # 14 days
    job_record_days: int = 30
    # Operations.
    log_retention_days: int = 14
    max_event_age_seconds: int = 21600
    backlog_age_alarm_minutes: int = 60
    alert_email: str = ""
    container_insights: bool = False
    keep_images: int = 10
    # The data.
    bucket_versioning: bool = True
    noncurrent_version_days: int = 30
    force_destroy: bool = False
    protect: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_config(self) -> dict[str, object]:
        """The arguments as the configuration keys they stand for, for one validation."""
        raw: dict[str, object] = {}
        for key in CONFIG_KEYS:
            value: Any = getattr(self, argument_name(key))
            if isinstance(value, Mapping):
                value = [f"{name}={item}" for name, item in value.items()]
            elif isinstance(value, (list, tuple)):
                value = list(value)
            raw[key] = value
        return raw

    @classmethod
    def from_settings(cls, settings: Settings) -> S3FargateJobsArgs:
        """The arguments that validate into these settings (the program's config, typed)."""
        secrets = {
            name: ref.ref if ref.is_arn else f"{ref.store}:{ref.ref}"
            for name, ref in settings.task_secrets.items()
        }
        return cls(
            bucket_name=settings.existing_bucket,
            upload_prefix=settings.upload_prefix,
            upload_suffixes=settings.upload_suffixes,
            result_prefix=settings.result_prefix,
            network_mode=settings.network_mode,
            vpc_id=settings.vpc_id or "",
            subnet_ids=settings.subnet_ids,
            task_image_context=settings.image_context or "",
            task_processor=settings.task_processor or "",
            task_environment=dict(settings.task_environment),
            task_secrets=secrets,
            task_secrets_kms_key_arns=settings.secret_kms_key_arns,
            task_cpu=settings.task_cpu,
            task_memory=settings.task_memory,
            cpu_architecture=settings.cpu_architecture,
            ephemeral_storage_gib=settings.ephemeral_storage_gib or 0,
            capacity_provider=settings.capacity_provider,
            task_timeout_minutes=settings.task_timeout_minutes or 0,
            max_concurrent_tasks=settings.max_concurrent_tasks,
            task_max_attempts=settings.task_max_attempts,
            task_retry_exit_codes=settings.task_retry_exit_codes,
            task_retry_timeouts=settings.task_retry_timeouts,
            spot_fallback_to_on_demand=settings.spot_fallback_to_on_demand,
            wait_timeout_minutes=settings.wait_timeout_minutes,
            job_record_days=settings.job_record_days,
            log_retention_days=settings.log_retention_days,
            max_event_age_seconds=settings.max_event_age_seconds,
            backlog_age_alarm_minutes=settings.backlog_age_alarm_minutes,
            alert_email=settings.alert_email or "",
            container_insights=settings.container_insights,
            keep_images=settings.keep_images,
            bucket_versioning=settings.bucket_versioning,
            noncurrent_version_days=settings.noncurrent_version_days or 0,
            force_destroy=settings.force_destroy,
            protect=settings.protect,
            tags=dict(settings.tags),
        )


def argument_fields() -> set[str]:
    return {f.name for f in fields(S3FargateJobsArgs)}


def load_args() -> S3FargateJobsArgs:
    """This stack's configuration, validated (messages name its keys), as the component's
    arguments."""
    return S3FargateJobsArgs.from_settings(load_settings())
