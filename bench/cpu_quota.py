"""Run a command confined to a fraction of a CPU, as Fargate confines a task (cgroup v1).

Fargate sizes a task in vCPUs (256 CPU units = 0.25 vCPU) and enforces it with a CFS quota:
in every 100 ms period the task's threads together may run for quota x 100 ms, then wait.
This module makes such a group under the cgroup v1 `cpu` controller (root only), runs one
command in it, and reports what Fargate would bill beside what the command really used:

- wall seconds from start to exit (billed: wall x vCPUs),
- CPU seconds: the child's user and system time (all its threads) from wait4, and the
  group's own count from `cpuacct.usage`,
- how often the quota throttled it, and the child's peak RSS.

Each group is made for one run and removed after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000  # the kernel's default CFS period, as on Fargate
RUN_TIMEOUT_SECONDS = 600  # a bounded wait: the slowest reader takes about 15 s per GiB
OUTPUT_KEPT = 64_000  # a job logs a few lines: all of them, retries included
ERROR_KEPT = 4000  # of a failed command's output, in the error

# The confined command starts from this small launcher, which joins the group first, so
# everything the command does (its start-up included) counts. A fresh small process also
# keeps the child's ru_maxrss its own: it would count the memory of a big parent.
LAUNCHER = """
import json, os, subprocess, sys, time
for tasks_file in sys.argv[1].split(os.pathsep):
    with open(tasks_file, "w") as joining:
        joining.write(str(os.getpid()))
began = time.monotonic()
child = subprocess.Popen(sys.argv[2:], stdout=sys.stderr)  # its output, kept for checks
_pid, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"seconds": time.monotonic() - began, "maxrssKiB": usage.ru_maxrss,
                  "user": usage.ru_utime, "system": usage.ru_stime,
                  "exitCode": os.waitstatus_to_exitcode(status)}))
"""


class QuotaUnavailableError(Exception):
    """No cgroup v1 cpu controller here, or no permission to make groups in it."""


@dataclass(frozen=True)
class Confined:
    """One confined run: what it took and what it used."""

    vcpus: float
    seconds: float
    user_seconds: float
    system_seconds: float
    group_cpu_seconds: float  # cpuacct.usage: everything that ran in the group
    throttled_periods: int
    throttled_seconds: float
    peak_rss_mib: float
    exit_code: int
    output: str  # the command's stdout and stderr, last OUTPUT_KEPT characters

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds

    @property
    def vcpu_seconds(self) -> float:
        """What Fargate bills for the run: wall time x the vCPUs reserved."""
        return self.seconds * self.vcpus


def controller_root(controller: str) -> Path:
    """Where the cgroup v1 hierarchy holding `controller` is mounted (cpu, cpuacct...)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup" and controller in fields[3].split(","):
            return Path(fields[1])
    raise QuotaUnavailableError(
        f"no cgroup v1 hierarchy with the {controller!r} controller is mounted; this bench "
        "needs cgroup v1 (/sys/fs/cgroup/cpu) to confine readers to a CPU quota"
    )


@contextmanager
def quota_group(name: str, vcpus: float) -> Iterator[tuple[Path, Path]]:
    """A fresh group allowed `vcpus` CPUs; yields its cpu and cpuacct folders; removed after."""
    cpu_dir = controller_root("cpu") / name
    acct_dir = controller_root("cpuacct") / name
    made: list[Path] = []
    try:
        for folder in dict.fromkeys((cpu_dir, acct_dir)):  # one folder where co-mounted
            folder.mkdir()
            made.append(folder)
        (cpu_dir / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu_dir / "cpu.cfs_quota_us").write_text(str(round(vcpus * PERIOD_US)))
    except OSError as error:
        for folder in reversed(made):
            folder.rmdir()
        raise QuotaUnavailableError(
            f"cannot make the cgroup {cpu_dir} with a quota of {vcpus} vCPU: {error} "
            "(run the bench as root on a machine with cgroup v1)"
        ) from error
    try:
        yield cpu_dir, acct_dir
    finally:
        for folder in reversed(made):
            folder.rmdir()  # empty again: the launcher and its child have exited


def run_confined(
    argv: list[str], vcpus: float, env: Mapping[str, str], cwd: Path, name: str
) -> Confined:
    """Run argv in a new group allowed `vcpus` CPUs; its timings, CPU use and peak RSS."""
    with quota_group(name, vcpus) as (cpu_dir, acct_dir):
        tasks = os.pathsep.join(
            str(folder / "cgroup.procs") for folder in dict.fromkeys((cpu_dir, acct_dir))
        )
        out = subprocess.run(
            [sys.executable, "-c", LAUNCHER, tasks, *argv],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
            timeout=RUN_TIMEOUT_SECONDS,
        )
        if out.returncode != 0:
            raise RuntimeError(f"the launcher failed for {argv}: {out.stderr.strip()}")
        figures = json.loads(out.stdout)
        if figures["exitCode"] != 0:
            raise RuntimeError(
                f"{argv} exited {figures['exitCode']}; its last output: {out.stderr[-ERROR_KEPT:]}"
            )
        stat = dict(
            line.split() for line in (cpu_dir / "cpu.stat").read_text().splitlines() if line
        )
        group_ns = int((acct_dir / "cpuacct.usage").read_text())
    return Confined(
        vcpus=vcpus,
        seconds=figures["seconds"],
        user_seconds=figures["user"],
        system_seconds=figures["system"],
        group_cpu_seconds=group_ns / 1e9,
        throttled_periods=int(stat.get("nr_throttled", 0)),
        throttled_seconds=int(stat.get("throttled_time", 0)) / 1e9,
        peak_rss_mib=figures["maxrssKiB"] / 1024,
        exit_code=figures["exitCode"],
        output=out.stderr[-OUTPUT_KEPT:],
    )
