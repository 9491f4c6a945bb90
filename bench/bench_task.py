"""Benchmark of record for the task: MiB processed per vCPU-second, as Fargate bills it.

Every reader runs confined to a CPU quota, as a Fargate task is (cgroup v1 CFS quota: 0.25
and 1 vCPU, the stacks' 256 and 1024 CPU units), against an S3-like server running outside
the quota: moto on 127.0.0.1 with every connection paced to 90 MB/s, as S3 paces one
connection (bench/paced_s3.py). The figure of merit is

    MiB per vCPU-second = object MiB / (seconds from process start to exit x vCPUs)

which is what a task of that size is billed for the object. Beside it: the CPU really used
(user + system, all threads, start-up included; the cgroup's own count agrees), the peak RSS,
and the server's own CPU over the run (it shares this machine's cores).

Readers, in the same run and round-robin so load drift hits them alike:

- `python -m task`: the job, with its default processor (SHA-256, line count, content type).
- the frame alone: the job with a processor that only takes the chunks (bench/readers.py).
- naive: one `get_object` stream, SHA-256 + `bytes.count` (the seed's approach).
- awscrt: aws-c-s3 through the `awscrt` package, the same work in its body callback.

The job and the naive reader run on an interpreter holding only the image's runtime
dependencies (task/requirements.txt, `make bench` builds venv-task): botocore changes its
signer when awscrt is importable, and the image has no awscrt. The job's code is compiled
first, as the image does. Objects hold random bytes with a newline every 100.

Targets (the exit status is 1 if any is missed): with the default processor at least 400
MiB per vCPU-second at 0.25 and at 1 vCPU; the frame alone at least 550 at 0.25 vCPU; the job
never slower than the naive reader; the job's peak RSS under 150 MiB, and within 10% from
256 MiB to 1 GiB objects.

The server and the readers run at nice -10 (--nice), so that on a shared machine other work
takes less of the cores from them; the load average before and after is printed.

Run as root on a machine with cgroup v1 (`make bench`, or):
    venv/bin/python bench/bench_task.py --task-python venv-task/bin/python
        [--runs 3] [--vcpus 0.25 1] [--sizes-mib 256 1024] [--per-connection-mbps 90] [--tls]

The server speaks plain HTTP by default, as when the targets were set. With --tls it speaks
HTTPS, as S3 does for the job on AWS (botocore's default, and the bucket policy's rule): every
reader then also decrypts, and the same targets are checked.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.s3.transfer import TransferConfig

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent  # whose task/ is measured
sys.path[:0] = [str(REPO), str(BENCH)]

from cpu_quota import Confined, QuotaUnavailableError, run_confined  # noqa: E402
from paced_s3 import (  # noqa: E402
    MIB,
    PatternReader,
    list_moto_modules_once,
    paced_s3,
    share_stored_bytes_in_moto,
)

from jobctl.emulator import point_at_emulator  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "bench-task"
TARGET_MIB_PER_VCPU_SECOND = 400.0  # the job, default processor, at every quota
TARGET_FRAME_MIB_PER_VCPU_SECOND = 550.0  # the frame alone, at 0.25 vCPU
FRAME_TARGET_VCPUS = 0.25
TARGET_RSS_MIB = 150.0
TARGET_RSS_GROWTH = 0.10
JOB = "python -m task"
FRAME = "frame alone"
NAIVE = "naive get_object"
AWSCRT = "awscrt (aws-c-s3)"
READERS = {"job": JOB, "frame": FRAME, "naive": NAIVE, "awscrt": AWSCRT}  # option: name


@dataclass(frozen=True)
class Run:
    reader: str
    vcpus: float
    size_mib: int
    confined: Confined
    server_cpu_seconds: float

    @property
    def mib_per_vcpu_second(self) -> float:
        return self.size_mib / self.confined.vcpu_seconds


@dataclass(frozen=True)
class Expected:
    sha256: str
    newlines: int
    ends_with_newline: bool

    @property
    def lines(self) -> int:
        """As the default processor counts them: a last line without a newline counts too."""
        return self.newlines + (not self.ends_with_newline)


def upload(s3: S3Client, key: str, size: int) -> Expected:
    """Put `size` bytes of the pattern at `key`; what every reader must then report."""
    reader = PatternReader(size)
    digest = hashlib.sha256()
    newlines = 0
    last = b""

    class Tee(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            nonlocal newlines, last
            count = reader.readinto(buffer)
            data = bytes(buffer[:count])
            digest.update(data)
            newlines += data.count(b"\n")
            last = data[-1:] or last
            return count

    s3.upload_fileobj(
        io.BufferedReader(Tee(), MIB),
        BUCKET,
        key,
        Config=TransferConfig(multipart_chunksize=64 * MIB, max_concurrency=4),
    )
    return Expected(digest.hexdigest(), newlines, last == b"\n")


def image_environment() -> dict[str, str]:
    """The ENV task/Dockerfile sets, but for folders that exist only in the image."""
    text = (REPO / "task" / "Dockerfile").read_text()
    values: dict[str, str] = {}
    for block in re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", text, flags=re.MULTILINE):
        for name, value in re.findall(r"(\w+)=(\S+)", block):
            values[name] = value
    values.pop("TMPDIR", None)  # /scratch is the image's volume
    return values


def reader_command(reader: str, task_python: str, key: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that run `reader` on `key`."""
    job_env = {**image_environment(), "S3_BUCKET": BUCKET, "S3_KEY": key}
    if reader == JOB:
        return [task_python, "-m", "task"], job_env
    if reader == FRAME:
        return [task_python, "-m", "task"], {
            **job_env,
            "TASK_PROCESSOR": "readers:consume",
            "PYTHONPATH": str(BENCH),
        }
    readers = str(BENCH / "readers.py")
    if reader == NAIVE:
        return [task_python, readers, "naive", BUCKET, key], {}
    # awscrt is not in the image: this reference runs where the bench's tools are installed.
    return [sys.executable, readers, "awscrt", BUCKET, key], {"PYTHONPATH": str(REPO)}


def measure(
    s3: S3Client,
    reader: str,
    *,
    vcpus: float,
    size_mib: int,
    expected: Expected,
    task_python: str,
    env: dict[str, str],
) -> Run:
    """One confined run of `reader`, checked: it must have read every byte right."""
    key = f"bench/{size_mib}MiB.bin"
    argv, extra = reader_command(reader, task_python, key)
    before = resource.getrusage(resource.RUSAGE_SELF)
    confined = run_confined(argv, vcpus, {**env, **extra}, REPO, name=f"bench-task-{os.getpid()}")
    after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if reader in (JOB, FRAME):
        result_key = f"results/{key}.json"
        result = json.loads(s3.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
        s3.delete_object(Bucket=BUCKET, Key=result_key)
        wanted: dict[str, object] = {"size": size_mib * MIB}
        if reader == JOB:
            wanted |= {"sha256": expected.sha256, "lines": expected.lines}
        if any(result.get(name) != value for name, value in wanted.items()):
            raise SystemExit(f"{reader} got it wrong: {result}, expected {wanted}")
    elif f"{expected.sha256} {expected.newlines}" not in confined.output:
        raise SystemExit(f"{reader} got it wrong: {confined.output[-500:]}, expected {expected}")
    return Run(reader, vcpus, size_mib, confined, server_cpu)


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (an actual run, so its figures belong together)."""
    ordered = sorted(runs, key=lambda run: run.confined.seconds)
    return ordered[(len(ordered) - 1) // 2]


def print_table(runs: list[Run], size_mib: int, vcpus_list: list[float], count: int) -> None:
    print(f"\n{size_mib} MiB object, median of {count} runs (the run with the median time):")
    header = (
        f"{'reader':<20} {'vCPU':>5} {'seconds':>8} {'MiB/vCPU-s':>10} "
        f"{'CPU s (user+sys)':>18} {'peak RSS':>9} {'throttled':>9} {'server CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for vcpus in vcpus_list:
        for reader in READERS.values():
            mine = [r for r in runs if r.reader == reader and r.vcpus == vcpus]
            if not mine:
                continue
            run = median_run(mine)
            c = run.confined
            spread = ", ".join(f"{r.confined.seconds:.2f}" for r in mine)
            print(
                f"{reader:<20} {vcpus:>5g} {c.seconds:>8.2f} {run.mib_per_vcpu_second:>10.0f} "
                f"{c.cpu_seconds:>6.2f} ({c.user_seconds:.2f}+{c.system_seconds:.2f}) "
                f"{c.peak_rss_mib:>5.0f} MiB {c.throttled_periods:>9} "
                f"{run.server_cpu_seconds:>8.2f} s   (all runs: {spread} s)"
            )


def check_targets(runs: list[Run], large: int, small: int | None, vcpus_list: list[float]) -> int:
    """Print every target with its figure; the number missed."""
    missed = 0

    def verdict(ok: bool, text: str) -> None:
        nonlocal missed
        missed += not ok
        print(f"  {'met   ' if ok else 'MISSED'}  {text}")

    def median(reader: str, vcpus: float, size: int) -> Run | None:
        mine = [r for r in runs if (r.reader, r.vcpus, r.size_mib) == (reader, vcpus, size)]
        return median_run(mine) if mine else None

    print("\ntargets:")
    for vcpus in vcpus_list:
        job = median(JOB, vcpus, large)
        naive = median(NAIVE, vcpus, large)
        if job is None:
            continue
        verdict(
            job.mib_per_vcpu_second >= TARGET_MIB_PER_VCPU_SECOND,
            f"default processor >= {TARGET_MIB_PER_VCPU_SECOND:.0f} MiB per vCPU-second at "
            f"{vcpus:g} vCPU ({large} MiB in <= "
            f"{large / TARGET_MIB_PER_VCPU_SECOND / vcpus:.1f} s): "
            f"{job.mib_per_vcpu_second:.0f} ({job.confined.seconds:.2f} s)",
        )
        if naive is not None:
            verdict(
                job.confined.seconds <= naive.confined.seconds,
                f"never slower than the naive reader at {vcpus:g} vCPU: "
                f"{job.confined.seconds:.2f} s against {naive.confined.seconds:.2f} s",
            )
    frame = median(FRAME, FRAME_TARGET_VCPUS, large)
    if frame is not None:
        verdict(
            frame.mib_per_vcpu_second >= TARGET_FRAME_MIB_PER_VCPU_SECOND,
            f"frame alone >= {TARGET_FRAME_MIB_PER_VCPU_SECOND:.0f} MiB per vCPU-second at "
            f"{FRAME_TARGET_VCPUS:g} vCPU: {frame.mib_per_vcpu_second:.0f} "
            f"({frame.confined.seconds:.2f} s)",
        )
    job_runs = [r for r in runs if r.reader == JOB]
    if job_runs:
        worst = max(job_runs, key=lambda r: r.confined.peak_rss_mib)
        verdict(
            worst.confined.peak_rss_mib < TARGET_RSS_MIB,
            f"job peak RSS < {TARGET_RSS_MIB:.0f} MiB in every run: highest "
            f"{worst.confined.peak_rss_mib:.0f} MiB ({worst.size_mib} MiB at {worst.vcpus:g} vCPU)",
        )
    if small is not None:
        for vcpus in vcpus_list:
            low, high = median(JOB, vcpus, small), median(JOB, vcpus, large)
            if low is None or high is None:
                continue
            rss_low = statistics.median(
                r.confined.peak_rss_mib for r in job_runs if (r.vcpus, r.size_mib) == (vcpus, small)
            )
            rss_high = statistics.median(
                r.confined.peak_rss_mib for r in job_runs if (r.vcpus, r.size_mib) == (vcpus, large)
            )
            growth = (rss_high - rss_low) / rss_low
            verdict(
                growth <= TARGET_RSS_GROWTH,
                f"job peak RSS flat from {small} MiB to {large} MiB at {vcpus:g} vCPU "
                f"(<= {TARGET_RSS_GROWTH:.0%}): {rss_low:.0f} -> {rss_high:.0f} MiB, {growth:+.1%}",
            )
    return missed


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def task_python_version(task_python: str) -> str:
    return subprocess.run(
        [task_python, "-c", "import platform; print('Python', platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task-python",
        default=str(REPO / "venv-task" / "bin" / "python"),
        help="interpreter with only task/requirements.txt (make bench builds venv-task)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each reader (median)")
    parser.add_argument("--vcpus", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument(
        "--sizes-mib",
        type=int,
        nargs="+",
        default=[256, 1024],
        help="object sizes; the largest gets every reader, the others the job (RSS flatness)",
    )
    parser.add_argument(
        "--readers",
        nargs="+",
        choices=list(READERS),
        default=list(READERS),
        help="which readers run on the largest object (the job always runs on the others)",
    )
    parser.add_argument("--per-connection-mbps", type=float, default=90.0)
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the server speaks HTTPS (a self-signed certificate the readers trust), as S3 "
        "does for the job on AWS; by default plain HTTP, as the targets were set",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of the server and the readers: on a shared machine, other work then "
        "takes less of the cores from them (negative values need root)",
    )
    args = parser.parse_args()
    if not 1 <= args.runs <= 15 or not all(0.05 <= v <= 64 for v in args.vcpus):
        parser.error("--runs must be 1 to 15, and each --vcpus 0.05 to 64")
    if not Path(args.task_python).exists():
        parser.error(f"{args.task_python} does not exist: run `make bench`, which builds it")
    sizes = sorted(set(args.sizes_mib))
    large, small = sizes[-1], (sizes[0] if len(sizes) > 1 else None)

    subprocess.run(
        [args.task_python, "-m", "compileall", "-q", str(REPO / "task")], check=True
    )  # as the image does at build time
    # Before any thread starts: threads and children inherit it.
    os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    share_stored_bytes_in_moto()
    list_moto_modules_once()
    print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), bench on Python "
        f"{platform.python_version()}, job on {task_python_version(args.task_python)}; "
        "load average before: " + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    print(
        f"server: moto on 127.0.0.1 in this process (outside every quota), "
        f"{'HTTPS' if args.tls else 'plain HTTP'}, each connection "
        f"paced to {args.per_connection_mbps:g} MB/s; readers confined by a CFS quota; "
        f"server and readers at nice {os.getpriority(os.PRIO_PROCESS, 0)}"
    )
    runs: list[Run] = []
    began = time.monotonic()
    try:
        with paced_s3(args.per_connection_mbps, tls=args.tls) as (url, meter, certificate):
            point_at_emulator(os.environ, url)
            if certificate is not None:  # botocore, and the awscrt reader, trust what this names
                os.environ["AWS_CA_BUNDLE"] = str(certificate)
            env = dict(os.environ)
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            expected = {size: upload(s3, f"bench/{size}MiB.bin", size * MIB) for size in sizes}
            chosen = [READERS[name] for name in args.readers]
            for _round in range(args.runs):
                for vcpus in args.vcpus:
                    for size in sizes:
                        for reader in chosen if size == large else (JOB,):
                            run = measure(
                                s3,
                                reader,
                                vcpus=vcpus,
                                size_mib=size,
                                expected=expected[size],
                                task_python=args.task_python,
                                env=env,
                            )
                            runs.append(run)
                            print(
                                f"  {reader:<20} {vcpus:>5g} vCPU {size:>5} MiB: "
                                f"{run.confined.seconds:6.2f} s, "
                                f"{run.mib_per_vcpu_second:5.0f} MiB/vCPU-s, "
                                f"CPU {run.confined.cpu_seconds:.2f} s, "
                                f"RSS {run.confined.peak_rss_mib:.0f} MiB",
                                flush=True,
                            )
            print(
                f"\nserver: {meter.connections} connections, {meter.bytes_sent / MIB:.0f} MiB "
                f"sent; {time.monotonic() - began:.0f} s in all"
            )
    except QuotaUnavailableError as error:
        print(f"cannot run: {error}", file=sys.stderr)
        return 2
    print_table([r for r in runs if r.size_mib == large], large, args.vcpus, args.runs)
    print("load average after: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
    missed = check_targets(runs, large, small, args.vcpus)
    print(f"\nexit status {1 if missed else 0}: {missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
