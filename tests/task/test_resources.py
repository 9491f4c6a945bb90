"""The task finds the CPU it may use: ECS task metadata, its cgroup's quota, its CPUs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from task.resources import CpuLimit, available_cpus, cgroup_cpus, ecs_task_cpus
from tests.fakes.local_http import serving


@contextmanager
def task_metadata(answer: object, status: int = 200) -> Iterator[str]:
    """An ECS task metadata endpoint on 127.0.0.1 whose /task answers `answer` as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps(answer).encode() if self.path.endswith("/task") else b"{}"
            self.send_response(status if self.path.endswith("/task") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as (host, port):
        yield f"http://{host}:{port}/v4/container-id"


def fake_cgroup_v1(root: Path, path: str, quotas: dict[str, int], mount_root: str = "/") -> Path:
    """A /proc/self and cgroup v1 cpu hierarchy under `root`; quotas by group path."""
    proc, mount = root / "proc", root / "cgroup" / "cpu"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"5:memory:/elsewhere\n4:cpu,cpuacct:{path}\n0::/\n")
    (proc / "mountinfo").write_text(
        f"32 31 0:29 {mount_root} {mount} rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    )
    for group, quota in quotas.items():
        folder = mount / group.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (folder / "cpu.cfs_period_us").write_text("100000\n")
    return proc


def test_ecs_task_metadata_gives_the_task_level_cpu_in_vcpus() -> None:
    with task_metadata({"Limits": {"CPU": 0.25, "Memory": 512}}) as uri:
        assert ecs_task_cpus(uri) == 0.25


@pytest.mark.parametrize(
    ("answer", "status"),
    [({"Limits": {"Memory": 512}}, 200), ({"Limits": {"CPU": 0}}, 200), ("not json", 500)],
    ids=["no-cpu-limit", "zero", "error"],
)
def test_metadata_without_a_usable_cpu_limit_is_ignored(answer: object, status: int) -> None:
    with task_metadata(answer, status) as uri:
        assert ecs_task_cpus(uri) is None


def test_an_unreachable_metadata_endpoint_is_ignored() -> None:
    assert ecs_task_cpus("http://127.0.0.1:9/v4/gone") is None
    assert ecs_task_cpus("file:///etc/passwd") is None


def test_the_cgroup_v1_quota_of_the_group_or_an_ancestor_limits_the_cpu(tmp_path: Path) -> None:
    proc = fake_cgroup_v1(tmp_path, "/ecs/task/container", {"/": -1, "/ecs/task": 50_000})
    assert cgroup_cpus(proc) == 0.5


def test_in_a_container_the_mounted_group_is_the_containers_own(tmp_path: Path) -> None:
    proc = fake_cgroup_v1(
        tmp_path, "/ecs/task/container", {"/": 25_000}, mount_root="/ecs/task/container"
    )
    assert cgroup_cpus(proc) == 0.25


def test_the_cgroup_v2_cpu_max_limits_the_cpu(tmp_path: Path) -> None:
    proc, mount = tmp_path / "proc", tmp_path / "cgroup2"
    proc.mkdir()
    (proc / "cgroup").write_text("0::/job\n")
    (proc / "mountinfo").write_text(f"30 23 0:26 / {mount} rw - cgroup2 cgroup2 rw\n")
    (mount / "job").mkdir(parents=True)
    (mount / "cpu.max").write_text("max 100000\n")
    (mount / "job" / "cpu.max").write_text("100000 100000\n")
    assert cgroup_cpus(proc) == 1.0


def test_no_quota_anywhere_means_no_cgroup_limit(tmp_path: Path) -> None:
    assert cgroup_cpus(fake_cgroup_v1(tmp_path, "/", {"/": -1})) is None
    assert cgroup_cpus(tmp_path / "missing") is None


def test_the_smallest_limit_found_wins_and_says_where_it_came_from(tmp_path: Path) -> None:
    proc = fake_cgroup_v1(tmp_path, "/", {"/": 150_000})
    cpus = float(len(os.sched_getaffinity(0)))
    with task_metadata({"Limits": {"CPU": 0.25}}) as uri:
        found = available_cpus({"ECS_CONTAINER_METADATA_URI_V4": uri}, proc)
    assert found == CpuLimit(0.25, "ECS task metadata")
    assert available_cpus({}, proc) == min(
        CpuLimit(1.5, "cgroup CPU quota"),
        CpuLimit(cpus, "cpu affinity"),
        key=lambda limit: limit.vcpus,
    )
