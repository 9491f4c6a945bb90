"""The task's settings, read once from the environment and validated with messages for people."""

from __future__ import annotations

import importlib
import math
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from task.objects import Processor
from task.resources import CpuLimit, available_cpus

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB  # S3's guidance: 8-16 MiB ranges; 8 keeps memory low
DEFAULT_CONCURRENCY = 6  # 6 x 8 MiB in flight: ~500 MB/s from S3, peak RSS ~130 MB
# Sizing the download from the task's CPU (see `download_plan`).
MB_PER_SECOND_PER_VCPU = 700  # what the job processes per vCPU (1 GiB, default processor)
MB_PER_SECOND_PER_CONNECTION = 90  # what S3 gives one connection
SPARE_RANGES = 2  # so the range next in line is whole before the processor needs it
MIN_PLANNED_CONCURRENCY = 3
MAX_PLANNED_CONCURRENCY = 16
BUFFER_BUDGET = 72 * MIB  # part x (concurrency + 1): peak RSS stays near 130 MiB
MIN_PLANNED_PART_SIZE = 4 * MIB
MIN_PART_SIZE = 64 * 1024  # smaller ranges only multiply requests; tests use this floor
MAX_PART_SIZE = 1024 * MIB
MAX_CONCURRENCY = 64
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
MAX_TIMEOUT = 30 * 24 * 3600  # the infrastructure's longest limit, 43200 minutes
DEFAULT_PROCESSOR = "task.processor:process"
DEFAULT_RESULT_PREFIX = "results/"

_SIZE = re.compile(r"^\s*([0-9]+)\s*(b|kib|mib|gib)?\s*$", re.IGNORECASE)
_WHOLE = re.compile(r"[0-9]+")  # str.isdigit() also passes "²", which int() then rejects
_UNITS = {"b": 1, "kib": 1024, "mib": MIB, "gib": 1024 * MIB}


class SettingsError(Exception):
    """One or more settings are missing or wrong; the message names each one and the fix."""


@dataclass(frozen=True)
class Settings:
    """Everything the task reads from its environment (see `from_environ` for the names)."""

    bucket: str
    key: str
    version_id: str | None
    result_bucket: str
    result_prefix: str
    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    progress_interval: float = 5.0
    processor_spec: str = DEFAULT_PROCESSOR
    timeout_seconds: int | None = None
    cpu_limit: CpuLimit | None = None  # what the download was sized for, when detected

    @property
    def result_key(self) -> str:
        """Where the result goes in `result_bucket`: `<RESULT_PREFIX><S3_KEY>.json`."""
        return _result_key(self.result_prefix, self.key)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read and check every setting, reporting all problems at once.

        Required: S3_BUCKET, S3_KEY (already URL-decoded). Optional: S3_VERSION_ID,
        RESULT_BUCKET (default S3_BUCKET), RESULT_PREFIX (default `results/`),
        DOWNLOAD_CONCURRENCY and DOWNLOAD_PART_SIZE (bytes, or with KiB/MiB/GiB; both by
        default from the task's CPU, see `download_plan`), PROGRESS_INTERVAL_SECONDS (default
        5), TASK_PROCESSOR (`module:function`, default `task.processor:process`),
        TASK_TIMEOUT_SECONDS (a time limit; default none).
        """
        problems: list[str] = []
        cpu_limit = available_cpus(environ)

        def required(name: str, what: str) -> str:
            value = environ.get(name, "")
            if not value:
                problems.append(
                    f"{name} is not set: it must hold {what}; the runner Lambda sets it per task"
                )
            return value

        bucket = required("S3_BUCKET", "the name of the bucket the uploaded object is in")
        key = required("S3_KEY", "the uploaded object's key, already URL-decoded")
        concurrency = _parse_int(
            environ, "DOWNLOAD_CONCURRENCY", planned_concurrency(cpu_limit.vcpus), problems
        )
        part_size = _parse_size(environ, "DOWNLOAD_PART_SIZE", part_size_for(concurrency), problems)
        interval = _parse_interval(environ, "PROGRESS_INTERVAL_SECONDS", 5.0, problems)
        timeout = environ.get("TASK_TIMEOUT_SECONDS", "").strip()
        if timeout and not (_WHOLE.fullmatch(timeout) and 1 <= int(timeout) <= MAX_TIMEOUT):
            problems.append(
                f"TASK_TIMEOUT_SECONDS={timeout!r} must be a whole number of seconds from 1 to "
                f"{MAX_TIMEOUT} (the infrastructure sets it from taskTimeoutMinutes)"
            )
            timeout = ""
        processor_spec = environ.get("TASK_PROCESSOR", "") or DEFAULT_PROCESSOR
        if not re.fullmatch(r"\w+(?:\.\w+)*:\w+", processor_spec):
            problems.append(
                f"TASK_PROCESSOR={processor_spec!r} is not `module:function` "
                f"(for example {DEFAULT_PROCESSOR!r})"
            )
        result_prefix = environ.get("RESULT_PREFIX", DEFAULT_RESULT_PREFIX)
        result_key_bytes = len(_result_key(result_prefix, key).encode())
        if result_key_bytes > MAX_KEY_BYTES:
            # Found now rather than at the final PUT, after the whole object was read.
            problems.append(
                f"the result key RESULT_PREFIX + S3_KEY + '.json' would be {result_key_bytes} "
                f"bytes, and S3 keys are at most {MAX_KEY_BYTES}: shorten RESULT_PREFIX "
                f"({result_prefix!r})"
            )
        if problems:
            raise SettingsError("; ".join(problems))
        return cls(
            bucket=bucket,
            key=key,
            version_id=environ.get("S3_VERSION_ID") or None,
            result_bucket=environ.get("RESULT_BUCKET") or bucket,
            result_prefix=result_prefix,
            part_size=part_size,
            concurrency=concurrency,
            progress_interval=interval,
            processor_spec=processor_spec,
            timeout_seconds=int(timeout) if timeout else None,
            cpu_limit=cpu_limit,
        )


def planned_concurrency(vcpus: float) -> int:
    """Ranges in flight for a task allowed `vcpus`.

    The task is CPU-bound: it needs as many ~90 MB/s connections as its CPU can keep busy,
    plus spares, and no more (each holds a part-sized buffer).
    """
    wanted = math.ceil(vcpus * MB_PER_SECOND_PER_VCPU / MB_PER_SECOND_PER_CONNECTION)
    return min(MAX_PLANNED_CONCURRENCY, max(MIN_PLANNED_CONCURRENCY, wanted + SPARE_RANGES))


def part_size_for(concurrency: int) -> int:
    """8 MiB parts, smaller as concurrency grows so the buffers stay within BUFFER_BUDGET."""
    fits = BUFFER_BUDGET // (concurrency + 1) // MIB * MIB
    return max(MIN_PLANNED_PART_SIZE, min(DEFAULT_PART_SIZE, fits))


def _result_key(result_prefix: str, key: str) -> str:
    return f"{result_prefix}{key}.json"


def load_processor(spec: str) -> Processor:
    """Import `module:function` named by TASK_PROCESSOR; SettingsError says what is wrong."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingsError(
            f"TASK_PROCESSOR={spec!r}: module {module_name!r} cannot be imported ({error}); "
            "check the module is in the image (under /app) and its name is spelled right"
        ) from error
    except Exception as error:  # the module's own code failed: a syntax error, a bad import
        where = "".join(traceback.format_exception_only(error)).strip()
        raise SettingsError(
            f"TASK_PROCESSOR={spec!r}: module {module_name!r} failed while being imported: "
            f"{where}; fix the module's code (run `python -c 'import {module_name}'`)"
        ) from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise SettingsError(
            f"TASK_PROCESSOR={spec!r}: {module_name!r} has no function {attribute!r}"
        )
    return cast("Processor", function)


def _parse_size(environ: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    match = _SIZE.match(raw)
    value = int(match[1]) * _UNITS[(match[2] or "b").lower()] if match else -1
    if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        problems.append(
            f"{name}={raw!r} must be a size from 64KiB to 1024MiB, in bytes or with a "
            "KiB/MiB/GiB suffix (for example 8MiB)"
        )
        return default
    return value


def _parse_int(environ: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    if not _WHOLE.fullmatch(raw.strip()) or not 1 <= int(raw) <= MAX_CONCURRENCY:
        problems.append(f"{name}={raw!r} must be a whole number from 1 to {MAX_CONCURRENCY}")
        return default
    return int(raw)


def _parse_interval(
    environ: Mapping[str, str], name: str, default: float, problems: list[str]
) -> float:
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:  # beyond an hour progress lines are pointless
        problems.append(f"{name}={raw!r} must be a number of seconds above 0 and at most 3600")
        return default
    return value
