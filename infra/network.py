"""Where tasks run: a VPC (new or existing) and a security group with no inbound rule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

from .config import SecretStore, Settings

# Interface endpoints a task in a subnet without internet access needs: pull the image
# (ECR API + Docker registry) and ship logs. S3 (image layers and the uploads) is a gateway
# endpoint, which is free.
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "logs")
# ECS reads the job's secrets before the container starts, from the store each lives in; without
# a way there the task stops with ResourceInitializationError. Each endpoint costs by the hour,
# so only the stores the secrets use get one. KMS needs none: the store decrypts for ECS.
SECRET_STORE_ENDPOINT_SERVICES: Mapping[SecretStore, str] = {
    "ssm": "ssm",
    "secretsmanager": "secretsmanager",
}
AVAILABILITY_ZONES = 2  # two AZs: resilience without paying for a third set of endpoints


def _endpoint_service_name(service: str, service_type: str) -> str:
    # The provider knows the exact name in every region and partition (it differs in China),
    # so nothing region-specific is written here.
    return aws.ec2.get_vpc_endpoint_service(service=service, service_type=service_type).service_name


def interface_endpoint_services(secret_stores: Iterable[SecretStore]) -> tuple[str, ...]:
    """What the tasks reach through interface endpoints: the image, the logs, and exactly the
    stores their secrets come from."""
    stores = set(secret_stores)
    return INTERFACE_ENDPOINT_SERVICES + tuple(
        service for store, service in SECRET_STORE_ENDPOINT_SERVICES.items() if store in stores
    )


def endpoint_specs(
    secret_stores: Iterable[SecretStore] = (),
) -> list[awsx.ec2.VpcEndpointSpecArgs]:
    specs = [
        awsx.ec2.VpcEndpointSpecArgs(
            service_name=_endpoint_service_name("s3", "Gateway"), vpc_endpoint_type="Gateway"
        )
    ]
    # Every interface endpoint alike: no subnets or groups named, so the Auto strategy gives
    # each the isolated subnets and the group admitting HTTPS from the VPC.
    specs += [
        awsx.ec2.VpcEndpointSpecArgs(
            service_name=_endpoint_service_name(service, "Interface"),
            vpc_endpoint_type="Interface",
            private_dns_enabled=True,
        )
        for service in interface_endpoint_services(secret_stores)
    ]
    return specs


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[Sequence[str]]
    security_group_id: pulumi.Output[str]

    def __init__(
        self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("s3fargatejobs:index:Network", name, None, opts)
        tags = dict(settings.tags)

        if settings.vpc_id is not None:
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.subnet_ids = pulumi.Output.from_input(list(settings.subnet_ids))
        else:
            public = settings.network_mode == "public"
            # Private: isolated subnets have no route to the internet at all; the endpoints
            # are the only way out, which is what "private without NAT" means.
            private_only: dict[str, Any] = (
                {}
                if public
                else {
                    "enable_dns_hostnames": True,  # private DNS on interface endpoints needs both
                    "enable_dns_support": True,
                    # Auto: awsx attaches the gateway endpoint to the VPC's route tables and gives
                    # interface endpoints the isolated subnets and a security group admitting HTTPS
                    # from the VPC's CIDR only.
                    "vpc_endpoint_strategy": awsx.ec2.VpcEndpointStrategy.AUTO,
                    "vpc_endpoint_specs": endpoint_specs(
                        ref.store for ref in settings.task_secrets.values()
                    ),
                }
            )
            vpc = awsx.ec2.Vpc(
                f"{name}-vpc",
                number_of_availability_zones=AVAILABILITY_ZONES,
                subnet_specs=[
                    awsx.ec2.SubnetSpecArgs(
                        type=awsx.ec2.SubnetType.PUBLIC if public else awsx.ec2.SubnetType.ISOLATED
                    )
                ],
                nat_gateways=awsx.ec2.NatGatewayConfigurationArgs(
                    strategy=awsx.ec2.NatGatewayStrategy.NONE
                ),
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
                **private_only,
            )
            self.vpc_id = vpc.vpc_id
            self.subnet_ids = vpc.public_subnet_ids if public else vpc.isolated_subnet_ids

        security_group = aws.ec2.SecurityGroup(
            f"{name}-tasks",
            vpc_id=self.vpc_id,
            description="Fargate jobs: no inbound traffic; HTTPS out to AWS APIs only",
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    description="HTTPS to S3, ECR and CloudWatch Logs (directly or via endpoints)",
                    protocol="tcp",
                    from_port=443,
                    to_port=443,
                    cidr_blocks=["0.0.0.0/0"],
                )
            ],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.security_group_id = security_group.id
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "subnetIds": self.subnet_ids,
                "securityGroupId": self.security_group_id,
            }
        )
