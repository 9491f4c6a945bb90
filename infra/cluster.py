"""The ECS cluster the jobs run in, with both Fargate capacity providers."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from .config import Settings


class JobCluster(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    # RunTask with a capacityProviderStrategy fails until the providers are attached, so the
    # runner depends on this resource, not just on the cluster.
    capacity_providers: aws.ecs.ClusterCapacityProviders

    def __init__(
        self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("s3fargatejobs:index:JobCluster", name, None, opts)
        self.cluster = aws.ecs.Cluster(
            name,
            settings=[
                aws.ecs.ClusterSettingArgs(
                    name="containerInsights",
                    value="enabled" if settings.container_insights else "disabled",
                )
            ],
            tags=dict(settings.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.capacity_providers = aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity",
            cluster_name=self.cluster.name,
            capacity_providers=["FARGATE", "FARGATE_SPOT"],
            default_capacity_provider_strategies=[
                aws.ecs.ClusterCapacityProvidersDefaultCapacityProviderStrategyArgs(
                    capacity_provider=settings.capacity_provider, weight=1
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"clusterArn": self.cluster.arn})
