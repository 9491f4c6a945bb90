"""Evaluate the Pulumi program offline, as `pulumi up` would declare it, without any cloud.

The program runs under `pulumi.runtime.set_mocks` with the stack's configuration (Pulumi.yaml
defaults overlaid with Pulumi.<stack>.yaml, as the CLI does). Every declared resource is recorded
with its inputs, parent, dependencies and options, and the stack outputs are resolved. The tests
assert on this record, and the local demo provisions the emulator from it, so both see exactly
what a deployment would create.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import runpy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROJECT = "s3-fargate-jobs"

# The identity the mocks answer with; the same defaults moto uses, so names and ARNs the program
# derives from them are the ones the local emulator produces.
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"


class ProgramError(Exception):
    """The program failed while being evaluated; `declared` names what it had declared by then."""

    def __init__(self, cause: BaseException, declared: list[str]) -> None:
        super().__init__(str(cause))
        self.declared = declared


@dataclass(frozen=True)
class DeclaredResource:
    type: str
    name: str
    urn: str
    parent: str
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    dependencies: tuple[str, ...]
    protect: bool
    custom: bool
    retain_on_delete: bool = False


@dataclass
class Evaluation:
    stack: str
    config: Mapping[str, str]
    resources: list[DeclaredResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> DeclaredResource:
        found = self.of_type(type_)
        if len(found) != 1:
            raise LookupError(f"expected exactly one {type_}, found {len(found)}")
        return found[0]

    def named(self, type_: str, suffix: str) -> DeclaredResource:
        """The one resource of `type_` whose logical name ends with `suffix`."""
        found = [r for r in self.of_type(type_) if r.name.endswith(suffix)]
        if len(found) != 1:
            raise LookupError(f"expected exactly one {type_} named *{suffix}, found {len(found)}")
        return found[0]

    def __iter__(self) -> Iterator[DeclaredResource]:
        return iter(self.resources)


def _fake_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Resources whose outputs are just a physical name and an ARN built from it.
_SIMPLE_ARNS = {
    "aws:lambda/function:Function": "lambda:{region}:{account}:function:{name}",
    "aws:iam/role:Role": "iam::{account}:role/{name}",
    "aws:ecs/cluster:Cluster": "ecs:{region}:{account}:cluster/{name}",
    "aws:cloudwatch/logGroup:LogGroup": "logs:{region}:{account}:log-group:{name}",
    "aws:sns/topic:Topic": "sns:{region}:{account}:{name}",
    "aws:kms/key:Key": "kms:{region}:{account}:key/{name}",
    "aws:cloudwatch/eventRule:EventRule": "events:{region}:{account}:rule/{name}",
    "aws:dynamodb/table:Table": "dynamodb:{region}:{account}:table/{name}",
}

Computed = tuple[str, dict[str, Any]]


def _bucket(name: str, physical: str, state: dict[str, Any]) -> Computed:
    bucket = state.get("bucket") or f"{name}-{_fake_digest(name)[:7]}"
    return bucket, {**state, "bucket": bucket, "arn": f"arn:{PARTITION}:s3:::{bucket}"}


def _queue(name: str, physical: str, state: dict[str, Any]) -> Computed:
    url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{physical}"
    arn = f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{physical}"
    return url, {**state, "name": physical, "url": url, "arn": arn}


def _task_definition(name: str, physical: str, state: dict[str, Any]) -> Computed:
    family = state["family"]
    unrevised = f"arn:{PARTITION}:ecs:{REGION}:{ACCOUNT_ID}:task-definition/{family}"
    return family, {
        **state,
        "revision": 1,
        "arn": f"{unrevised}:1",
        "arnWithoutRevision": unrevised,
    }


def _repository(name: str, physical: str, state: dict[str, Any]) -> Computed:
    return physical, {
        **state,
        "name": physical,
        "registryId": ACCOUNT_ID,
        "repositoryUrl": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{physical}",
        "arn": f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT_ID}:repository/{physical}",
    }


def _image(name: str, physical: str, state: dict[str, Any]) -> Computed:
    image_name = str(state.get("imageName", name))
    repository = image_name.rsplit(":", 1)[0]
    digest = f"{repository}@sha256:{_fake_digest(image_name)}"
    return f"{name}-id", {**state, "repoDigest": digest}


def _security_group(name: str, physical: str, state: dict[str, Any]) -> Computed:
    return f"sg-{_fake_digest(name)[:17]}", state


def _vpc(name: str, physical: str, state: dict[str, Any]) -> Computed:
    subnets = [f"subnet-{_fake_digest(name + str(i))[:17]}" for i in range(2)]
    kinds = {s.get("type") for s in state.get("subnetSpecs", [])}
    # A remote component: its outputs differ in type from its inputs of the same name.
    return f"{name}-id", {
        "vpcId": f"vpc-{_fake_digest(name)[:17]}",
        "publicSubnetIds": subnets if "Public" in kinds else [],
        "privateSubnetIds": subnets if "Private" in kinds else [],
        "isolatedSubnetIds": subnets if "Isolated" in kinds else [],
    }


_SPECIAL = {
    "aws:s3/bucket:Bucket": _bucket,
    "aws:sqs/queue:Queue": _queue,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecr/repository:Repository": _repository,
    "docker:index/image:Image": _image,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "awsx:ec2:Vpc": _vpc,
}


class _Mocks(pulumi.runtime.Mocks):
    """Plausible cloud answers: ARNs, ids and URLs shaped like the real ones."""

    def __init__(self) -> None:
        self.inputs_by_name: dict[tuple[str, str], dict[str, Any]] = {}
        self.outputs_by_name: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        name, typ = args.name, args.typ
        state = dict(args.inputs)
        physical = state.get("name") or f"{name}-{_fake_digest(name)[:7]}"
        resource_id = f"{name}-id"
        if typ in _SIMPLE_ARNS:
            arn = f"arn:{PARTITION}:" + _SIMPLE_ARNS[typ].format(
                region=REGION, account=ACCOUNT_ID, name=physical
            )
            state.update(name=physical, arn=arn)
            resource_id = arn if typ == "aws:ecs/cluster:Cluster" else physical
        elif typ in _SPECIAL:
            resource_id, state = _SPECIAL[typ](name, physical, state)
        self.inputs_by_name[(typ, name)] = _reveal(dict(args.inputs))
        self.outputs_by_name[(typ, name)] = {**state, "id": resource_id}
        return resource_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        answer = _INVOKES.get(args.token)
        if answer is None:
            raise NotImplementedError(
                f"the offline evaluator has no answer for invoke {args.token}"
            )
        return answer(dict(args.args)), []


def _vpc_endpoint_service(args: dict[str, Any]) -> dict[str, Any]:
    service = args.get("service", "unknown")
    return {
        "serviceName": f"com.amazonaws.{REGION}.{service}",
        "serviceType": args.get("serviceType", "Interface"),
        "id": service,
    }


def _secret(args: dict[str, Any]) -> dict[str, Any]:
    # Metadata only, as the provider returns it: the ARN carries Secrets Manager's suffix.
    name = str(args.get("name") or str(args.get("arn", "")).rsplit(":", 1)[-1])
    arn = f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}-AbC123"
    return {"arn": arn, "name": name, "id": arn, "kmsKeyId": ""}


def _existing_bucket(args: dict[str, Any]) -> dict[str, Any]:
    bucket = str(args.get("bucket"))
    # A bucket named after another region lives there (to test the region check).
    region = next((r for r in ("eu-west-1", "ap-south-1") if bucket.startswith(r)), REGION)
    return {
        "bucket": bucket,
        "arn": f"arn:{PARTITION}:s3:::{bucket}",
        "region": region,
        "id": bucket,
    }


# The provider functions the program calls, answered as the provider would.
_INVOKES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "aws:index/getPartition:getPartition": lambda _: {
        "partition": PARTITION,
        "dnsSuffix": "amazonaws.com",
        "id": PARTITION,
    },
    "aws:index/getRegion:getRegion": lambda _: {"region": REGION, "name": REGION, "id": REGION},
    "aws:index/getCallerIdentity:getCallerIdentity": lambda _: {
        "accountId": ACCOUNT_ID,
        "arn": f"arn:{PARTITION}:iam::{ACCOUNT_ID}:user/offline",
        "userId": "OFFLINE",
        "id": ACCOUNT_ID,
    },
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda _: {
        "userName": "AWS",
        "password": "offline-token",
        "authorizationToken": "offline",
        "proxyEndpoint": f"https://{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com",
        "id": REGION,
    },
    "aws:ec2/getVpcEndpointService:getVpcEndpointService": _vpc_endpoint_service,
    "aws:secretsmanager/getSecret:getSecret": _secret,
    "aws:s3/getBucket:getBucket": _existing_bucket,
}


def _reveal(value: Any) -> Any:
    """Inputs with their secret wrappers removed, so tests can read what is inside."""
    if isinstance(value, dict):
        if value.get(_special_sig_key) == _special_secret_sig:
            return _reveal(value["value"])
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


class _RecordingMonitor(MockMonitor):
    """Keeps what the mock interface hides: parent, dependencies and options."""

    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Any] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append((request, response.urn))
        return response


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Pulumi.yaml defaults, then Pulumi.<stack>.yaml, then overrides; as Pulumi passes them."""
    project_file = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())
    values: dict[str, Any] = {
        f"{PROJECT}:{key}": spec["default"]
        for key, spec in (project_file.get("config") or {}).items()
        if isinstance(spec, dict) and "default" in spec
    }
    stack_file = PROJECT_DIR / f"Pulumi.{stack}.yaml"
    if not stack_file.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in _stack_files())
        raise ValueError(f"unknown stack {stack!r}: no {stack_file.name}; stacks here: {known}")
    values.update((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})
    for key, value in (overrides or {}).items():
        values[key if ":" in key else f"{PROJECT}:{key}"] = value
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
        if value is not None
    }


def _stack_files() -> list[Path]:
    return sorted(p for p in PROJECT_DIR.glob("Pulumi.*.yaml"))


def committed_stacks() -> list[str]:
    return [p.name[len("Pulumi.") : -len(".yaml")] for p in _stack_files()]


def evaluate(stack: str, overrides: Mapping[str, Any] | None = None) -> Evaluation:
    """Run __main__.py for `stack` under mocks and return everything it declared."""
    return evaluate_program(PROJECT_DIR, PROJECT, stack, stack_config(stack, overrides))


def evaluate_program(
    program_dir: Path, project: str, stack: str, config: Mapping[str, str]
) -> Evaluation:
    """Run any Pulumi program's __main__.py (a user's, say) under the same mocks."""
    # What a failed evaluation left behind (an exception raised inside an apply) must not
    # fail the next one, as pulumi.runtime.test clears it.
    pulumi.runtime.settings.SETTINGS.rpc_manager.clear()
    pulumi.runtime.settings.SETTINGS.outputs.clear()
    mocks = _Mocks()
    monitor = _RecordingMonitor(mocks)
    pulumi.runtime.set_all_config(dict(config))
    # A fresh root stack per evaluation, so several stacks can be evaluated in one process.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    root = pulumi.runtime.get_root_resource()
    exported: dict[str, Any] = {}

    def program() -> pulumi.Output[Any]:
        # The Pulumi CLI runs the program from the project directory; relative paths rely on it.
        with contextlib.chdir(program_dir):
            runpy.run_path(str(program_dir / "__main__.py"), run_name="__main__")
        outputs = dict(getattr(root, "outputs", {}))

        def keep(resolved: dict[str, Any]) -> dict[str, Any]:
            exported.update(resolved)
            return resolved

        return pulumi.Output.all(**outputs).apply(keep) if outputs else pulumi.Output.from_input({})

    try:
        _sync_await(run_pulumi_func(lambda: _sync_await(program().future())))
    except Exception as error:
        raise ProgramError(error, [r.name for r, _ in monitor.registrations]) from error

    evaluation = Evaluation(stack=stack, config=dict(config), outputs=exported)
    for request, urn in monitor.registrations:
        name = request.name
        key = (request.type, name)
        evaluation.resources.append(
            DeclaredResource(
                type=request.type,
                name=name,
                urn=urn,
                parent=request.parent,
                inputs=mocks.inputs_by_name.get(key, {}),
                outputs=mocks.outputs_by_name.get(key, {}),
                dependencies=tuple(request.dependencies),
                protect=bool(request.protect),
                custom=bool(request.custom),
                retain_on_delete=bool(request.retainOnDelete),
            )
        )
    return evaluation
