"""s3-fargate-jobs as a Pulumi component: a Fargate task for every file uploaded to S3.

Installed from this repository's package it is `s3_fargate_jobs`; in the repository, `infra`.
"""

from .args import ExistingNotifications, S3FargateJobsArgs
from .component import S3FargateJobs
from .config import ConfigError

__all__ = ["ConfigError", "ExistingNotifications", "S3FargateJobs", "S3FargateJobsArgs"]
