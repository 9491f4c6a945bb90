"""How much CPU this task may use, so the download can be sized to it.

Fargate bills and confines a task by vCPUs (256 CPU units = 0.25 vCPU), enforced as a CFS
quota. The container learns its limit from two places, read in this order of trust:

- ECS task metadata (`$ECS_CONTAINER_METADATA_URI_V4/task`, "Limits": {"CPU": vCPUs}), the
  task-level size the task definition asked for;
- its cgroup's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
  where the kernel enforces it; a container can see its own group, not always the task's.

The smallest limit found wins, and the CPUs the process may be scheduled on cap it. Nothing
here fails: a source that cannot be read is skipped.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

METADATA_TIMEOUT_SECONDS = 1.0  # a link-local endpoint: it answers in milliseconds or not at all
PROC = Path("/proc/self")


@dataclass(frozen=True)
class CpuLimit:
    """The vCPUs this task may use, and where that figure came from (for the start log)."""

    vcpus: float
    source: str


def available_cpus(environ: Mapping[str, str], proc: Path = PROC) -> CpuLimit:
    """The tightest CPU limit among ECS task metadata, the cgroup quota and CPU affinity."""
    limits = [CpuLimit(float(len(os.sched_getaffinity(0))), "cpu affinity")]
    metadata_uri = environ.get("ECS_CONTAINER_METADATA_URI_V4", "")
    if metadata_uri:
        vcpus = ecs_task_cpus(metadata_uri)
        if vcpus is not None:
            limits.append(CpuLimit(vcpus, "ECS task metadata"))
    quota = cgroup_cpus(proc)
    if quota is not None:
        limits.append(CpuLimit(quota, "cgroup CPU quota"))
    return min(limits, key=lambda limit: limit.vcpus)


def ecs_task_cpus(metadata_uri: str) -> float | None:
    """The task's CPU limit in vCPUs from ECS task metadata v4, or None if not answered."""
    if not metadata_uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(  # noqa: S310 - ECS's own endpoint, scheme checked above
            f"{metadata_uri.rstrip('/')}/task", timeout=METADATA_TIMEOUT_SECONDS
        ) as response:
            task = json.loads(response.read())
        cpus = float(task["Limits"]["CPU"])
    except (OSError, ValueError, KeyError, TypeError):  # unreachable, not JSON, no limit set
        return None
    return cpus if math.isfinite(cpus) and cpus > 0 else None


def cgroup_cpus(proc: Path = PROC) -> float | None:
    """The CFS quota of this process's cgroup and its ancestors, in CPUs; None if unlimited."""
    try:
        memberships = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in memberships:
        _id, controllers, path = line.split(":", 2)
        if controllers == "":
            folder = _group_folder(mounts, "cgroup2", None, path)
            limits += [_v2_quota(group) for group in _up_to_mount(folder)]
        elif "cpu" in controllers.split(","):
            folder = _group_folder(mounts, "cgroup", "cpu", path)
            limits += [_v1_quota(group) for group in _up_to_mount(folder)]
    found = [limit for limit in limits if limit > 0]
    return min(found) if found else None


def _group_folder(
    mounts: list[str], fstype: str, controller: str | None, path: str
) -> tuple[Path, Path] | None:
    """(the group's folder, its hierarchy's mount point) for a /proc/self/cgroup path."""
    for line in mounts:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != fstype:
            continue
        if controller is not None and controller not in tail[2].split(","):
            continue
        root, mount_point = fields[3], Path(fields[4])
        # In a container the mount's root is the container's own group: paths are below it.
        relative = os.path.relpath(path, root) if path.startswith(root) else "."
        folder = (mount_point / relative).resolve()
        return (folder, mount_point) if folder.is_relative_to(mount_point) else None
    return None


def _up_to_mount(found: tuple[Path, Path] | None) -> list[Path]:
    if found is None:
        return []
    folder, mount_point = found
    chain = [folder]
    while chain[-1] != mount_point and chain[-1] != chain[-1].parent:
        chain.append(chain[-1].parent)
    return chain


def _v2_quota(group: Path) -> float:
    try:
        quota, period = (group / "cpu.max").read_text().split()
        return int(quota) / int(period) if quota != "max" else 0.0
    except (OSError, ValueError, ZeroDivisionError):
        return 0.0


def _v1_quota(group: Path) -> float:
    try:
        quota = int((group / "cpu.cfs_quota_us").read_text())
        period = int((group / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else 0.0
    except (OSError, ValueError, ZeroDivisionError):
        return 0.0
