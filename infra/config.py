"""The only module that reads stack configuration.

`load_settings()` reads `pulumi.Config` and hands the raw values to `parse_settings()`, a pure
function that validates them into a frozen `Settings`. Defaults live in one place:
`Pulumi.yaml`, which the Pulumi CLI (and the offline evaluator) applies before the program runs.
The reusable component validates its typed arguments with the same function; only the names in
its messages differ (`S3FargateJobsArgs.task_cpu` instead of `s3-fargate-jobs:taskCpu`).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

import pulumi

from .sources import DEFAULT_JOB_IMAGE, bundled

NAMESPACE = "s3-fargate-jobs"

NetworkMode = Literal["public", "private"]
CpuArchitecture = Literal["X86_64", "ARM64"]
CapacityProvider = Literal["FARGATE", "FARGATE_SPOT"]

NETWORK_MODES: tuple[NetworkMode, ...] = ("public", "private")
CPU_ARCHITECTURES: tuple[CpuArchitecture, ...] = ("X86_64", "ARM64")
CAPACITY_PROVIDERS: tuple[CapacityProvider, ...] = ("FARGATE", "FARGATE_SPOT")

# Fargate's accepted task sizes: CPU units -> allowed memory in MiB (AWS ECS developer guide,
# "Task CPU and memory"). Anything else is rejected by RegisterTaskDefinition at deploy time.
FARGATE_MEMORY_BY_CPU: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {
        256: (512, 1024, 2048),
        512: tuple(range(1024, 4096 + 1, 1024)),
        1024: tuple(range(2048, 8192 + 1, 1024)),
        2048: tuple(range(4096, 16384 + 1, 1024)),
        4096: tuple(range(8192, 30720 + 1, 1024)),
        8192: tuple(range(16384, 61440 + 1, 4096)),
        16384: tuple(range(32768, 122880 + 1, 8192)),
    }
)

# The values CloudWatch Logs accepts for retentionInDays (PutRetentionPolicy).
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

EPHEMERAL_STORAGE_GIB = (21, 200)
MAX_EVENT_AGE_SECONDS = (60, 21600)  # Lambda's bounds for asynchronous event age
KEEP_IMAGES = (1, 1000)
TASK_TIMEOUT_MINUTES = (1, 43200)  # up to 30 days; 0 means no limit
QUEUE_RETENTION_DAYS = 14  # SQS's maximum; how long the dead-letter queues hold a message
# From the queues' retention (so a replayed upload can still read the version it names) to
# 100 years; 0 keeps every version.
NONCURRENT_VERSION_DAYS = (QUEUE_RETENTION_DAYS, 36500)
MAX_CONCURRENT_TASKS = (0, 100_000)  # 0 means only the account's own limits
# The job's own variables: a name ECS accepts, and none the job contract or AWS already sets.
ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
RESERVED_ENVIRONMENT = frozenset(
    {
        "S3_BUCKET",
        "S3_KEY",
        "S3_VERSION_ID",
        "RESULT_PREFIX",
        "TMPDIR",
        "TASK_TIMEOUT_SECONDS",
        "TASK_PROCESSOR",
        # Which job, attempt and claim a task belongs to: the runner sets them for each RunTask, and
        # reads them back from ECS's stop events.
        "JOB_ID",
        "JOB_ATTEMPT",
        "JOB_CLAIM",
    }
)
RESERVED_ENVIRONMENT_PREFIXES = ("AWS_", "ECS_")
PROCESSOR = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
# Where a secret comes from: an ARN, or a name with the service it lives in.
SSM_PARAMETER_ARN = re.compile(r"arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/.+")
SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^:]+")
KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")
WHERE_SECRETS_LIVE = (
    "ssm:<parameter name>, secretsmanager:<secret name>, or the ARN of an SSM parameter or a "
    "Secrets Manager secret"
)
BACKLOG_AGE_ALARM_MINUTES = (1, QUEUE_RETENTION_DAYS * 24 * 60)
# A job's attempts and records, within the runner's bounds (taskrunner/runner_settings.py; a
# test holds them equal). Attempts: AWS Batch's retryStrategy, 1 to 10.
TASK_MAX_ATTEMPTS = (1, 10)
EXIT_CODES = (1, 255)  # 0 is success: never a failure to retry
JOB_TIMEOUT_EXIT = 8  # task/exit_codes.py: the job stopped itself at TASK_TIMEOUT_SECONDS
# How long a job may wait for a slot: from Batch's least for a RUNNABLE job (10 minutes) to the
# 14 days the queues keep a failure for a redrive.
WAIT_TIMEOUT_MINUTES = (10, QUEUE_RETENTION_DAYS * 24 * 60)
JOB_RECORD_DAYS = (1, 3650)

# Every key the program reads. A test checks that Pulumi.yaml declares exactly these.
CONFIG_KEYS: tuple[str, ...] = (
    "networkMode",
    "vpcId",
    "subnetIds",
    "taskCpu",
    "taskMemory",
    "cpuArchitecture",
    "ephemeralStorageGiB",
    "capacityProvider",
    "uploadPrefix",
    "uploadSuffixes",
    "resultPrefix",
    "logRetentionDays",
    "maxEventAgeSeconds",
    "forceDestroy",
    "protect",
    "bucketVersioning",
    "noncurrentVersionDays",
    "containerInsights",
    "keepImages",
    "tags",
    "alertEmail",
    "taskTimeoutMinutes",
    "maxConcurrentTasks",
    "backlogAgeAlarmMinutes",
    "taskProcessor",
    "taskImageContext",
    "taskEnvironment",
    "taskSecrets",
    "taskSecretsKmsKeyArns",
    "taskMaxAttempts",
    "taskRetryExitCodes",
    "taskRetryTimeouts",
    "spotFallbackToOnDemand",
    "waitTimeoutMinutes",
    "jobRecordDays",
)


class ConfigError(pulumi.RunError):
    """Bad stack configuration. RunError makes Pulumi print the message without a traceback."""


SecretStore = Literal["ssm", "secretsmanager"]


@dataclass(frozen=True)
class SecretRef:
    """Where one of the job's secrets lives: a parameter or secret, by name or by ARN."""

    store: SecretStore
    ref: str  # as given: a name, or an ARN

    @property
    def is_arn(self) -> bool:
        return self.ref.startswith("arn:")


@dataclass(frozen=True)
class Settings:
    """Everything the components need, validated. Components never read `pulumi.Config`."""

    project: str
    stack: str
    network_mode: NetworkMode
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    task_cpu: int
    task_memory: int
    cpu_architecture: CpuArchitecture
    ephemeral_storage_gib: int | None
    capacity_provider: CapacityProvider
    upload_prefix: str
    upload_suffixes: tuple[str, ...]
    result_prefix: str
    log_retention_days: int
    max_event_age_seconds: int
    force_destroy: bool
    protect: bool
    bucket_versioning: bool
    container_insights: bool
    keep_images: int
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    alert_email: str | None = None
    task_timeout_minutes: int | None = None
    noncurrent_version_days: int | None = None  # None: keep every noncurrent version
    max_concurrent_tasks: int = 0  # 0: only the account's own limits
    backlog_age_alarm_minutes: int = 60
    task_processor: str | None = None  # module:function for the default image
    image_context: str | None = None  # None: the job image built from task/
    task_environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    task_secrets: Mapping[str, SecretRef] = field(default_factory=lambda: MappingProxyType({}))
    secret_kms_key_arns: tuple[str, ...] = ()
    task_max_attempts: int = 3
    task_retry_exit_codes: tuple[int, ...] = ()  # job failures worth another attempt
    task_retry_timeouts: bool = False
    spot_fallback_to_on_demand: bool = False  # a Spot-interrupted job's next attempt on FARGATE
    wait_timeout_minutes: int = WAIT_TIMEOUT_MINUTES[1]
    job_record_days: int = 30
    name: str | None = None  # the component's name; None: "<project>-<stack>"
    existing_bucket: str | None = None  # None: a bucket is created

    @property
    def name_prefix(self) -> str:
        """Prefix for physical names that must be known before deployment (family, log groups)."""
        return self.name or f"{self.project}-{self.stack}"

    @property
    def task_family(self) -> str:
        return f"{self.name_prefix}-job"

    @property
    def docker_platform(self) -> str:
        """The image platform; derived from the same setting as the task's runtimePlatform."""
        return {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}[self.cpu_architecture]

    @property
    def assign_public_ip(self) -> Literal["ENABLED", "DISABLED"]:
        return "ENABLED" if self.network_mode == "public" else "DISABLED"

    @property
    def uses_existing_network(self) -> bool:
        return self.vpc_id is not None


@dataclass(frozen=True)
class Naming:
    """How messages name a setting: a stack config key, or an argument of the component."""

    describe: Callable[[str], str]  # "taskCpu" -> how the user knows it
    fix: Callable[[str], str]  # what to do about a bad value


CONFIG_NAMING = Naming(
    describe=lambda key: f"Config {NAMESPACE}:{key}",
    fix=lambda key: f"Fix it with `pulumi config set {key} <value>` (or edit Pulumi.<stack>.yaml).",
)


def argument_name(key: str) -> str:
    """The component argument for a config key: taskCpu -> task_cpu."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower().replace("gi_b", "gib")


ARGS_NAMING = Naming(
    describe=lambda key: f"S3FargateJobsArgs.{argument_name(key)}",
    fix=lambda key: "Pass one that is allowed.",
)
_NAMING: ContextVar[Naming] = ContextVar("naming", default=CONFIG_NAMING)


@contextmanager
def naming(how: Naming) -> Iterator[None]:
    """Messages raised inside name settings `how` says."""
    token = _NAMING.set(how)
    try:
        yield
    finally:
        _NAMING.reset(token)


def _key(name: str) -> str:
    return _NAMING.get().describe(name)


def _fail(name: str, value: object, allowed: str) -> ConfigError:
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    return ConfigError(f"{_key(name)} = {shown} is not valid: {allowed}. {_NAMING.get().fix(name)}")


T = TypeVar("T")


def _choice(raw: Mapping[str, object], name: str, allowed: tuple[T, ...]) -> T:
    value = _required(raw, name)
    if value not in allowed:
        raise _fail(name, value, "allowed values are " + ", ".join(map(str, allowed)))
    return value


def _required(raw: Mapping[str, object], name: str) -> object:
    if name not in raw or raw[name] is None:
        raise ConfigError(
            f"{_key(name)} is missing. It is declared with a default in Pulumi.yaml; "
            "set it with `pulumi config set " + name + " <value>`."
        )
    return raw[name]


def _integer(raw: Mapping[str, object], name: str) -> int:
    value = _required(raw, name)
    if isinstance(value, bool):
        raise _fail(name, value, "expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise _fail(name, value, "expected a whole number")


def _boolean(raw: Mapping[str, object], name: str) -> bool:
    value = _required(raw, name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(name, value, "expected true or false")


def _string(raw: Mapping[str, object], name: str) -> str:
    value = _required(raw, name)
    if not isinstance(value, str):
        raise _fail(name, value, "expected a string")
    return value


def _string_list(raw: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = _required(raw, name)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            raise _fail(name, value, "expected a list of strings") from None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _fail(name, value, "expected a list of non-empty strings")
    return tuple(value)


def _integer_list(raw: Mapping[str, object], name: str) -> tuple[int, ...]:
    value = _required(raw, name)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            raise _fail(name, value, "expected a list of whole numbers") from None
    if not isinstance(value, list):
        raise _fail(name, value, "expected a list of whole numbers")
    numbers = []
    for item in value:
        # A number set with `pulumi config set --path` may arrive as its text.
        number = int(item) if isinstance(item, str) and item.strip().isdigit() else item
        if isinstance(number, bool) or not isinstance(number, int):
            raise _fail(name, value, "expected a list of whole numbers")
        numbers.append(number)
    return tuple(numbers)


def _in_range(name: str, value: int, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise _fail(name, value, f"{what} must be between {low} and {high}")
    return value


def _task_size(raw: Mapping[str, object]) -> tuple[int, int]:
    cpu = _integer(raw, "taskCpu")
    memory = _integer(raw, "taskMemory")
    if cpu not in FARGATE_MEMORY_BY_CPU:
        allowed = ", ".join(str(c) for c in FARGATE_MEMORY_BY_CPU)
        raise _fail("taskCpu", cpu, f"Fargate accepts CPU units {allowed}")
    allowed_memory = FARGATE_MEMORY_BY_CPU[cpu]
    if memory not in allowed_memory:
        low, high = allowed_memory[0], allowed_memory[-1]
        step = allowed_memory[1] - allowed_memory[0]
        listing = (
            ", ".join(map(str, allowed_memory))
            if len(allowed_memory) <= 4
            else f"{low} to {high} in steps of {step}"
        )
        raise _fail("taskMemory", memory, f"with taskCpu {cpu} Fargate accepts {listing} MiB")
    return cpu, memory


def _tags(raw: Mapping[str, object], project: str, stack: str) -> Mapping[str, str]:
    tags = {"project": project, "stack": stack}
    for item in _string_list(raw, "tags"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail("tags", item, 'each tag is written "key=value"')
        tags[key.strip()] = value.strip()
    return MappingProxyType(tags)


def _pairs(raw: Mapping[str, object], name: str) -> dict[str, str]:
    """A list of "NAME=value" strings as a mapping; each NAME a variable the job may have."""
    pairs: dict[str, str] = {}
    for item in _string_list(raw, name):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not ENVIRONMENT_NAME.fullmatch(key):
            raise _fail(name, item, 'each is written "NAME=value", NAME of letters, digits and "_"')
        if key in RESERVED_ENVIRONMENT or key.startswith(RESERVED_ENVIRONMENT_PREFIXES):
            reserved = ", ".join(sorted(RESERVED_ENVIRONMENT))
            raise _fail(
                name,
                item,
                f"{key} is set by the job contract or by AWS ({reserved}, AWS_*, ECS_*); "
                "choose another name",
            )
        if key in pairs:
            raise _fail(name, item, f"{key} is given twice")
        pairs[key] = value
    return pairs


def _secret_ref(name: str, item: str, source: str) -> SecretRef:
    source = source.strip()
    if SSM_PARAMETER_ARN.fullmatch(source):
        return SecretRef("ssm", source)
    if SECRET_ARN.match(source):
        return SecretRef("secretsmanager", source)
    store, sep, ref = source.partition(":")
    if sep and ref.strip() and store in ("ssm", "secretsmanager") and not source.startswith("arn"):
        return SecretRef("ssm" if store == "ssm" else "secretsmanager", ref.strip())
    raise _fail(name, item, f"each secret is NAME=<where>, <where> being {WHERE_SECRETS_LIVE}")


def _secrets(raw: Mapping[str, object], environment: Mapping[str, str]) -> dict[str, SecretRef]:
    secrets = {
        key: _secret_ref("taskSecrets", f"{key}={source}", source)
        for key, source in _pairs(raw, "taskSecrets").items()
    }
    both = sorted(set(secrets) & set(environment))
    if both:
        raise _fail(
            "taskSecrets", both, "a name is either a plain variable (taskEnvironment) or a secret"
        )
    return secrets


def _result_prefix_matches_upload_filter(
    upload_prefix: str, suffixes: tuple[str, ...], result_prefix: str
) -> bool:
    """Would an object the task writes (`<resultPrefix><key>.json`) start another task?"""
    if not result_prefix.startswith(upload_prefix):
        return False
    if not suffixes:
        return True
    # Result keys end in ".json" after an arbitrary key, so any suffix that can end such a
    # name ("json", ".json", "x.json", ...) matches some result object.
    return any(s.endswith(".json") or ".json".endswith(s) for s in suffixes)


def _suffixes_overlap(suffixes: tuple[str, ...]) -> tuple[str, str] | None:
    # By position, not value: a suffix listed twice overlaps itself, and S3 rejects that too.
    for i, a in enumerate(suffixes):
        for j, b in enumerate(suffixes):
            if i != j and a.endswith(b):
                return a, b
    return None


@dataclass(frozen=True)
class _JobContents:
    processor: str | None
    environment: dict[str, str]
    secrets: dict[str, SecretRef]
    kms_keys: tuple[str, ...]


def _job_contents(raw: Mapping[str, object]) -> _JobContents:
    """What the job gets besides the upload: processor, variables, secrets and their keys."""
    processor = _string(raw, "taskProcessor").strip() or None
    if processor is not None and not PROCESSOR.fullmatch(processor):
        raise _fail(
            "taskProcessor",
            processor,
            "expected module:function with an absolute module path, e.g. "
            "task.first_line:process; empty for the default processor",
        )
    environment = _pairs(raw, "taskEnvironment")
    secrets = _secrets(raw, environment)
    kms_keys = _string_list(raw, "taskSecretsKmsKeyArns")
    for arn in kms_keys:
        if not KMS_KEY_ARN.fullmatch(arn):
            raise _fail(
                "taskSecretsKmsKeyArns",
                arn,
                "expected the ARN of a KMS key (arn:<partition>:kms:<region>:<account>:key/<id>)",
            )
    if kms_keys and not secrets:
        raise _fail(
            "taskSecretsKmsKeyArns",
            list(kms_keys),
            "keys that decrypt the job's secrets go with taskSecrets; there are none",
        )
    return _JobContents(processor, environment, secrets, kms_keys)


@dataclass(frozen=True)
class _JobRetries:
    max_attempts: int
    exit_codes: tuple[int, ...]
    timeouts: bool
    spot_fallback: bool
    wait_timeout_minutes: int
    record_days: int


def _job_retries(raw: Mapping[str, object]) -> _JobRetries:
    """How a job's attempts are retried, how long it may wait, how long its record is kept."""
    max_attempts = _in_range(
        "taskMaxAttempts",
        _integer(raw, "taskMaxAttempts"),
        TASK_MAX_ATTEMPTS,
        "the attempts a job gets in all (1: never retried), which",
    )
    codes = _integer_list(raw, "taskRetryExitCodes")
    low, high = EXIT_CODES
    for code in codes:
        if not low <= code <= high:
            raise _fail(
                "taskRetryExitCodes",
                list(codes),
                f"exit code {code} is not a failure a job can exit with; list codes from {low} "
                f"to {high} (0 is success)",
            )
        if code == JOB_TIMEOUT_EXIT:
            # The runner reads 8 as the job's own time limit: a timeout, not a job failure.
            raise _fail(
                "taskRetryExitCodes",
                list(codes),
                f"exit code {JOB_TIMEOUT_EXIT} is the job stopping at its time limit, which "
                "counts as a timeout; to retry timeouts set taskRetryTimeouts to true instead",
            )
    wait_timeout = _in_range(
        "waitTimeoutMinutes",
        _integer(raw, "waitTimeoutMinutes"),
        WAIT_TIMEOUT_MINUTES,
        f"the minutes a job may wait for a task before it fails (the queues keep a failure "
        f"{QUEUE_RETENTION_DAYS} days for a redrive), which",
    )
    record_days = _in_range(
        "jobRecordDays",
        _integer(raw, "jobRecordDays"),
        JOB_RECORD_DAYS,
        "the days a finished job's record is kept",
    )
    return _JobRetries(
        max_attempts=max_attempts,
        exit_codes=tuple(sorted(set(codes))),
        timeouts=_boolean(raw, "taskRetryTimeouts"),
        spot_fallback=_boolean(raw, "spotFallbackToOnDemand"),
        wait_timeout_minutes=wait_timeout,
        record_days=record_days,
    )


# The default image copies task/ to /app/task and runs from /app: of the job's own code, the
# package `task` is all it holds.
DEFAULT_IMAGE_PACKAGE = "task"


def _top_level_names(module: ast.Module) -> set[str]:
    """Names a module binds at top level: functions, and what assignments and imports bind (a
    processor re-exported from elsewhere is as good as one defined here)."""
    names: set[str] = set()
    for node in module.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".", 1)[0] for a in node.names)
    return names


def _processor_problem(processor: str, task_dir: Path) -> str | None:
    """Why the default image, built from `task_dir`, cannot run `module:function`; None if it
    can. Read with `ast`, never imported: importing would run the job's code at deploy time."""
    module_name, _, function = processor.partition(":")
    package, *inner = module_name.split(".")
    if package != DEFAULT_IMAGE_PACKAGE:
        return (
            f"the default image holds the job's own code only as the package "
            f"{DEFAULT_IMAGE_PACKAGE!r} (the folder task/): name a module in it, "
            "task.<module>:<function> from a file task/<module>.py, or build your own image "
            "with taskImageContext"
        )
    place = task_dir.joinpath(*inner)
    candidates = ([place.with_suffix(".py")] if inner else []) + [place / "__init__.py"]
    source = next((path for path in candidates if path.is_file()), None)
    if source is None:
        looked = " or ".join(str(path) for path in candidates)
        return (
            f"the default image has no module {module_name} (no {looked}); add the file, or "
            "name a module that is there (empty runs the default, task.processor:process)"
        )
    try:
        module = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except SyntaxError as error:
        return f"{source} does not parse (line {error.lineno}: {error.msg}); fix the module"
    defined = _top_level_names(module)
    if function not in defined:
        functions = sorted(n.name for n in module.body if isinstance(n, ast.FunctionDef))
        offered = ", ".join(functions) if functions else "none"
        return f"{source} defines no function {function!r} at top level (its functions: {offered})"
    return None


def check_processor_in_default_image(settings: Settings, task_dir: Path) -> None:
    """Refuse a taskProcessor the default image does not contain, before anything is declared:
    otherwise every upload's task starts, fails to import it and exits 2."""
    if settings.image_context is not None or settings.task_processor is None:
        return  # a user's own image holds what it holds; no processor runs the default
    problem = _processor_problem(settings.task_processor, task_dir)
    if problem is not None:
        raise _fail("taskProcessor", settings.task_processor, problem)


def parse_settings(raw: Mapping[str, object], project: str, stack: str) -> Settings:
    """Validate raw config values (strings as Pulumi stores them, or native values)."""
    network_mode = _choice(raw, "networkMode", NETWORK_MODES)
    cpu_architecture = _choice(raw, "cpuArchitecture", CPU_ARCHITECTURES)
    capacity_provider = _choice(raw, "capacityProvider", CAPACITY_PROVIDERS)
    task_cpu, task_memory = _task_size(raw)

    vpc_id = _string(raw, "vpcId").strip() or None
    subnet_ids = _string_list(raw, "subnetIds")
    if subnet_ids and vpc_id is None:
        raise _fail("subnetIds", list(subnet_ids), "subnetIds needs vpcId set to their VPC")
    if vpc_id is not None and not subnet_ids:
        raise _fail("vpcId", vpc_id, "an existing VPC needs subnetIds for the tasks")

    ephemeral = _integer(raw, "ephemeralStorageGiB")
    if ephemeral != 0:
        _in_range(
            "ephemeralStorageGiB",
            ephemeral,
            EPHEMERAL_STORAGE_GIB,
            "0 (Fargate's default 20 GiB) or a size that",
        )

    retention = _integer(raw, "logRetentionDays")
    if retention not in LOG_RETENTION_DAYS:
        raise _fail(
            "logRetentionDays",
            retention,
            "CloudWatch Logs accepts " + ", ".join(map(str, LOG_RETENTION_DAYS)),
        )

    upload_prefix = _string(raw, "uploadPrefix")
    upload_suffixes = _string_list(raw, "uploadSuffixes")
    result_prefix = _string(raw, "resultPrefix")
    if not result_prefix:
        raise _fail("resultPrefix", result_prefix, "results need their own non-empty prefix")
    overlap = _suffixes_overlap(upload_suffixes)
    if overlap:
        raise _fail(
            "uploadSuffixes",
            list(upload_suffixes),
            f'S3 rejects overlapping suffix filters ("{overlap[0]}" ends with "{overlap[1]}")',
        )
    if _result_prefix_matches_upload_filter(upload_prefix, upload_suffixes, result_prefix):
        raise _fail(
            "resultPrefix",
            result_prefix,
            f"results written under it would match the upload filter (uploadPrefix "
            f"{upload_prefix!r}) and start a task for every result, forever; choose a "
            "resultPrefix outside uploadPrefix",
        )

    alert_email = _string(raw, "alertEmail").strip() or None
    if alert_email is not None and ("@" not in alert_email or " " in alert_email):
        raise _fail("alertEmail", alert_email, "expected one email address, or empty for none")
    timeout = _integer(raw, "taskTimeoutMinutes")
    if timeout != 0:
        _in_range(
            "taskTimeoutMinutes", timeout, TASK_TIMEOUT_MINUTES, "0 (no limit) or a limit that"
        )

    noncurrent_days = _integer(raw, "noncurrentVersionDays")
    if noncurrent_days != 0:
        _in_range(
            "noncurrentVersionDays",
            noncurrent_days,
            NONCURRENT_VERSION_DAYS,
            f"0 keeps every version; otherwise, to outlast the dead-letter queues' "
            f"{QUEUE_RETENTION_DAYS}-day retention so a replayed upload can still read its "
            "version, the days",
        )

    max_concurrent_tasks = _in_range(
        "maxConcurrentTasks",
        _integer(raw, "maxConcurrentTasks"),
        MAX_CONCURRENT_TASKS,
        "0 (only the account's limits) or the most tasks of this job at once, which",
    )
    backlog_age_alarm = _in_range(
        "backlogAgeAlarmMinutes",
        _integer(raw, "backlogAgeAlarmMinutes"),
        BACKLOG_AGE_ALARM_MINUTES,
        f"the minutes an upload may wait in the backlog before the alarm fires (the backlog "
        f"keeps uploads {QUEUE_RETENTION_DAYS} days), which",
    )

    job = _job_contents(raw)
    retries = _job_retries(raw)
    if backlog_age_alarm >= retries.wait_timeout_minutes:
        raise _fail(
            "backlogAgeAlarmMinutes",
            backlog_age_alarm,
            f"a job fails after waiting waitTimeoutMinutes ({retries.wait_timeout_minutes}), so "
            "an alarm at that age or later would never see it wait; choose fewer minutes than "
            "waitTimeoutMinutes",
        )

    return Settings(
        project=project,
        stack=stack,
        network_mode=network_mode,
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        task_cpu=task_cpu,
        task_memory=task_memory,
        cpu_architecture=cpu_architecture,
        ephemeral_storage_gib=ephemeral or None,
        capacity_provider=capacity_provider,
        upload_prefix=upload_prefix,
        upload_suffixes=upload_suffixes,
        result_prefix=result_prefix,
        log_retention_days=retention,
        max_event_age_seconds=_in_range(
            "maxEventAgeSeconds",
            _integer(raw, "maxEventAgeSeconds"),
            MAX_EVENT_AGE_SECONDS,
            "Lambda's maximum event age",
        ),
        force_destroy=_boolean(raw, "forceDestroy"),
        protect=_boolean(raw, "protect"),
        bucket_versioning=_boolean(raw, "bucketVersioning"),
        container_insights=_boolean(raw, "containerInsights"),
        keep_images=_in_range(
            "keepImages", _integer(raw, "keepImages"), KEEP_IMAGES, "the number of images kept"
        ),
        tags=_tags(raw, project, stack),
        alert_email=alert_email,
        task_timeout_minutes=timeout or None,
        noncurrent_version_days=noncurrent_days or None,
        max_concurrent_tasks=max_concurrent_tasks,
        backlog_age_alarm_minutes=backlog_age_alarm,
        task_processor=job.processor,
        image_context=_string(raw, "taskImageContext").strip() or None,
        task_environment=MappingProxyType(job.environment),
        task_secrets=MappingProxyType(job.secrets),
        secret_kms_key_arns=job.kms_keys,
        task_max_attempts=retries.max_attempts,
        task_retry_exit_codes=retries.exit_codes,
        task_retry_timeouts=retries.timeouts,
        spot_fallback_to_on_demand=retries.spot_fallback,
        wait_timeout_minutes=retries.wait_timeout_minutes,
        job_record_days=retries.record_days,
    )


def load_settings() -> Settings:
    """Read this stack's configuration and validate it; fails before any resource is declared."""
    config = pulumi.Config(NAMESPACE)
    raw = {name: config.get(name) for name in CONFIG_KEYS}
    settings = parse_settings(raw, project=pulumi.get_project(), stack=pulumi.get_stack())
    # Here as well as in the component, so that the message names the stack's config key.
    check_processor_in_default_image(settings, bundled(DEFAULT_JOB_IMAGE))
    return settings
