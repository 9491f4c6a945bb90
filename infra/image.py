"""The task image: an ECR repository and the image built from task/ and pushed to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.config import Settings

# Caches the tag skips; task/.dockerignore keeps each out of the build context too (a test checks).
IGNORED_PARTS = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
IGNORED_SUFFIXES = (".pyc",)


def content_tag(context_dir: Path, platform: str) -> str:
    """A tag that changes whenever the build context or the platform changes.

    Tags are immutable in the repository, so each distinct build needs a distinct tag. The Docker
    provider rebuilds and pushes when its hash of the context changes: the Dockerfile and every
    file .dockerignore leaves in, by path, mode and content. The tag covers all of that, or a
    rebuilt image would be pushed under a tag ECR refuses to overwrite.
    """
    digest = hashlib.sha256(platform.encode())
    for path in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(context_dir)
        if set(IGNORED_PARTS).intersection(relative.parts) or path.suffix in IGNORED_SUFFIXES:
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o7777).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{platform.rsplit('/', 1)[-1]}-{digest.hexdigest()[:20]}"


def lifecycle_policy(keep_images: int) -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"Keep the last {keep_images} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_images,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }
    )


class TaskImage(pulumi.ComponentResource):
    repository: aws.ecr.Repository
    # repo@sha256:...: the task definition pins the exact image, so every code change
    # registers a new task definition revision.
    image_digest_uri: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: Settings,
        context_dir: Path,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("s3fargatejobs:index:TaskImage", name, None, opts)

        self.repository = aws.ecr.Repository(
            f"{name}-repo",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            image_tag_mutability="IMMUTABLE",
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
            ],
            force_delete=settings.force_destroy,
            tags=dict(settings.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(settings.keep_images),
            opts=pulumi.ResourceOptions(parent=self),
        )
        token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
        tag = content_tag(context_dir, settings.docker_platform)
        image = docker.Image(
            f"{name}-image",
            build=docker.DockerBuildArgs(
                context=str(context_dir),
                dockerfile=str(context_dir / "Dockerfile"),
                platform=settings.docker_platform,
            ),
            image_name=pulumi.Output.concat(self.repository.repository_url, ":", tag),
            registry=docker.RegistryArgs(
                server=self.repository.repository_url,
                username=token.user_name,
                password=pulumi.Output.secret(token.password),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_digest_uri = image.repo_digest
        self.register_outputs(
            {"repositoryUrl": self.repository.repository_url, "image": self.image_digest_uri}
        )
