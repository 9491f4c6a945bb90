"""The upload bucket: private, encrypted, TLS-only, and cleaning up after itself."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from .config import Settings

# An interrupted multipart upload keeps its parts, billed and invisible in listings, until
# aborted; a week leaves any real upload time to finish.
ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS = 7


def lifecycle_rules(settings: Settings) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """What S3 deletes by itself: abandoned multipart uploads; with versioning, old versions
    after `noncurrentVersionDays` and the delete markers left with no version behind them."""
    whole_bucket = aws.s3.BucketLifecycleConfigurationRuleFilterArgs()
    rules = [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-multipart-uploads",
            status="Enabled",
            filter=whole_bucket,
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS
            ),
        )
    ]
    if settings.bucket_versioning and settings.noncurrent_version_days:
        rules.append(
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=whole_bucket,
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=settings.noncurrent_version_days
                ),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                    expired_object_delete_marker=True
                ),
            )
        )
    return rules


class UploadBucket(pulumi.ComponentResource):
    """The bucket users upload to, and tasks write results into (under the result prefix)."""

    bucket: aws.s3.Bucket
    # Bucket configuration that must settle before S3 accepts a notification configuration;
    # parallel writes to one bucket's subresources fail with OperationAborted.
    configured: list[pulumi.Resource]

    def __init__(
        self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("s3fargatejobs:index:UploadBucket", name, None, opts)
        tags = dict(settings.tags)

        self.bucket = aws.s3.Bucket(
            name,
            force_destroy=settings.force_destroy,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=settings.protect),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ownership]),
        )
        self.configured = [public_access, ownership, encryption]
        if settings.bucket_versioning:
            self.configured.append(
                aws.s3.BucketVersioning(
                    f"{name}-versioning",
                    bucket=self.bucket.id,
                    versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                        status="Enabled"
                    ),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[encryption]),
                )
            )
        self.configured.append(
            aws.s3.BucketLifecycleConfiguration(
                f"{name}-lifecycle",
                bucket=self.bucket.id,
                rules=lifecycle_rules(settings),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.configured)),
            )
        )
        self.configured.append(
            aws.s3.BucketPolicy(
                f"{name}-tls-only",
                bucket=self.bucket.id,
                policy=pulumi.Output.json_dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "DenyInsecureTransport",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [
                                    self.bucket.arn,
                                    pulumi.Output.concat(self.bucket.arn, "/*"),
                                ],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ],
                    }
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.configured)),
            )
        )
        self.register_outputs({"bucketName": self.bucket.bucket, "bucketArn": self.bucket.arn})
