"""Benchmark of record for the task: MiB processed per vCPU-second, as Fargate bills it.

Every reader runs confined to a CPU quota, as a Fargate task is (cgroup v1 CFS quota: 0.25
and 1 vCPU, the stacks' 256 and 1024 CPU units), against an S3-like server running outside
the quota (bench/nginx_s3.py): nginx serves the objects' bytes over TLS 1.2/1.3 with AES-GCM,
keeps connections alive across ranges and paces each connection to ~90 MB/s, as S3 does;
moto behind it answers HEAD, PUT and the rest. The figure of merit is

    MiB per vCPU-second = object MiB / (seconds from process start to exit x vCPUs)

which is what a task of that size is billed for the object. Beside it: the CPU really used
(user + system, all threads, start-up included), the job's CPU from exec to its first range
request (its start-up, from its finish log line), the peak RSS, and nginx's CPU per GiB sent
(it shares this machine's cores).

The same readers then read the same objects over plain HTTP from the same nginx: the second
table, and issue 12's targets. Readers, round-robin so load drift hits them alike:

- `python -m task`: the job, with its default processor (SHA-256, line count, content type).
- the frame alone: the job with a processor that only takes the chunks (bench/readers.py).
- naive: one `get_object` stream, SHA-256 + `bytes.count` (the seed's approach).
- awscrt: aws-c-s3 through the `awscrt` package, the same work in its body callback.

The job and the naive reader run on an interpreter holding only the image's runtime
dependencies (task/requirements.txt, `make bench` builds venv-task): botocore changes its
signer when awscrt is importable, and the image has no awscrt. The job's code is compiled and
its slim botocore data built first, as the image does. Readers trust botocore's own CA
bundle plus the server's certificate, so TLS costs them what it costs on AWS. Objects hold
random bytes with a newline every 100. The bucket is versioned, as prod's is: every range
names its version.

Targets over TLS (issue 22; the exit status is 1 if any target is missed): the job at least
1.0x aws-c-s3's speed at 0.25 vCPU and 1.25x at 1 vCPU, at least 550 MiB per vCPU-second at
both (aim: 600); the frame alone at least 750 at 0.25 vCPU; the job's start-up at most 0.2
CPU-s; its peak RSS under 150 MiB and within 10% from 256 MiB to 1 GiB; a 4 GiB object at 1
vCPU (once) in time linear in size (its seconds per GiB within 10% of 1 GiB's). Over plain
HTTP, issue 12's: the job at least 400 at both sizes and never slower than naive, the frame
alone at least 550 at 0.25 vCPU.

The server and the readers run at nice -10 (--nice), so that on a shared machine other work
takes less of the cores from them; the load average before and after is printed.

Run as root on a machine with cgroup v1 and nginx (`apt-get install -y nginx-light`), as
`make bench` does, or:
    venv/bin/python bench/bench_task.py --task-python venv-task/bin/python
        [--runs 3] [--vcpus 0.25 1] [--sizes-mib 256 1024] [--once-mib 4096]
        [--protocols https http] [--per-connection-mbps 90]
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent  # whose task/ is measured
sys.path[:0] = [str(REPO), str(BENCH)]

from cpu_quota import Confined, QuotaUnavailableError, run_confined  # noqa: E402
from nginx_s3 import NginxS3, NginxUnavailableError, Published, check_pacing, nginx_s3  # noqa: E402
from paced_s3 import (  # noqa: E402
    MIB,
    PatternReader,
    list_moto_modules_once,
    moto_server,
    self_signed_tls,
    share_stored_bytes_in_moto,
)

from jobctl.emulator import point_at_emulator  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUCKET = "bench-task"
HTTPS, HTTP = "https", "http"
PROTOCOLS = {HTTPS: "TLS", HTTP: "plain HTTP"}
JOB = "python -m task"
FRAME = "frame alone"
NAIVE = "naive get_object"
AWSCRT = "awscrt (aws-c-s3)"
READERS = {"job": JOB, "frame": FRAME, "naive": NAIVE, "awscrt": AWSCRT}  # option: name
# Issue 22, over TLS.
TARGET_JOB = 550.0  # MiB per vCPU-second, default processor, at every quota
AIM_JOB = 600.0
TARGET_FRAME = 750.0  # at FRAME_TARGET_VCPUS
TARGET_SPEED_OVER_AWSCRT = {0.25: 1.0, 1.0: 1.25}  # awscrt's seconds / the job's
TARGET_STARTUP_CPU_SECONDS = 0.2
TARGET_LINEAR = 0.10  # seconds per GiB of the once-run object, at most this much above 1 GiB's
ONCE_VCPUS = 1.0
# Issue 12, over plain HTTP.
TARGET_JOB_HTTP = 400.0
TARGET_FRAME_HTTP = 550.0
FRAME_TARGET_VCPUS = 0.25
TARGET_RSS_MIB = 150.0
TARGET_RSS_GROWTH = 0.10
PACING_TOLERANCE = 0.15  # curl's figure for one connection, within this of the asked rate
PACING_CHECK_BYTES = 100_000_000


@dataclass(frozen=True)
class Run:
    protocol: str
    reader: str
    vcpus: float
    size_mib: int
    confined: Confined
    server_cpu_seconds: float  # nginx's, over the run
    startup_cpu_seconds: float | None  # the job's, exec to its first range request
    retried_ranges: int = 0  # the job's ranges read again through botocore (its retry lines)

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


def object_key(size_mib: int) -> str:
    return f"bench/{size_mib}MiB.bin"


def upload(s3: S3Client, key: str, size: int, copy: IO[bytes]) -> Expected:
    """Put `size` bytes of the pattern at `key` (and into `copy`); what readers must report."""
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
            copy.write(data)
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


def publish(servers: list[NginxS3], s3: S3Client, key: str, file: Path) -> None:
    """Have every nginx serve `file` as the current version of `key`, agreeing with moto.

    The file's mtime becomes moto's Last-Modified, and moto's ETag becomes nginx's (derived
    from mtime and size), so HEAD and GET describe the object alike and If-Match holds.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    head = s3.head_object(Bucket=BUCKET, Key=key)
    mtime = calendar.timegm(head["LastModified"].utctimetuple())
    item = Published(BUCKET, key, head.get("VersionId"))
    etags = {server.publish(item, file, mtime) for server in servers}
    (etag,) = etags  # one file, one mtime: one ETag
    stored = s3_backends[DEFAULT_ACCOUNT_ID]["global"].get_object(BUCKET, key)
    if stored is None:
        raise SystemExit(f"moto lost {key} just after it was uploaded")
    stored._etag = etag.strip('"')  # moto quotes it itself


def check_server(server: NginxS3, key: str, per_connection_mbps: float) -> float:
    """What the job relies on, through this server; the MB/s curl gets on one connection."""
    s3 = boto3.client(
        "s3",
        endpoint_url=server.url,
        verify=str(server.certificate) if server.certificate else None,
    )
    head = s3.head_object(Bucket=BUCKET, Key=key)
    ranged = s3.get_object(
        Bucket=BUCKET,
        Key=key,
        Range="bytes=100-199",
        VersionId=head["VersionId"],
        IfMatch=head["ETag"],
    )
    problems = []
    if ranged["ResponseMetadata"]["HTTPHeaders"].get("server") != "nginx":
        problems.append("the version-pinned range did not come from nginx")
    for name in ("ETag", "LastModified"):
        if ranged[name] != head[name]:
            problems.append(f"{name}: HEAD {head[name]}, GET {ranged[name]}")
    if ranged["ContentRange"] != f"bytes 100-199/{head['ContentLength']}":
        problems.append(f"Content-Range {ranged['ContentRange']}")
    try:
        s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-99", IfMatch='"another"')
        problems.append("If-Match with another ETag was served")
    except ClientError as error:
        if error.response["ResponseMetadata"]["HTTPStatusCode"] != 412:
            problems.append(f"If-Match with another ETag: {error}")
    mbps = check_pacing(
        server.url,
        f"/{BUCKET}/{key}?versionId={head['VersionId']}",
        server.certificate,
        PACING_CHECK_BYTES,
    )
    if abs(mbps / per_connection_mbps - 1) > PACING_TOLERANCE:
        problems.append(f"one connection got {mbps:.0f} MB/s, asked for {per_connection_mbps:g}")
    if problems:
        raise SystemExit(f"the server at {server.url} is not S3-like: {'; '.join(problems)}")
    return mbps


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


def retried_ranges(output: str) -> int:
    """How many ranges the job logged as read again through botocore (a fallback costs CPU)."""
    return sum(
        1 for line in output.splitlines() if line.startswith("{") and '"event": "retry"' in line
    )


def job_startup_cpu(output: str) -> float | None:
    """The firstRangeCpuSeconds of the job's finish line, if it logged one."""
    for line in output.splitlines():
        if line.startswith("{") and '"event": "finish"' in line:
            value = json.loads(line).get("firstRangeCpuSeconds")
            return float(value) if value is not None else None
    return None


def measure(
    s3: S3Client,
    server: NginxS3,
    protocol: str,
    reader: str,
    *,
    vcpus: float,
    size_mib: int,
    expected: Expected,
    task_python: str,
    env: dict[str, str],
) -> Run:
    """One confined run of `reader`, checked: it must have read every byte right."""
    key = object_key(size_mib)
    argv, extra = reader_command(reader, task_python, key)
    server_before = server.worker_cpu_seconds()
    confined = run_confined(argv, vcpus, {**env, **extra}, REPO, name=f"bench-task-{os.getpid()}")
    server_cpu = server.worker_cpu_seconds() - server_before
    startup, retried = None, 0
    if reader in (JOB, FRAME):
        result_key = f"results/{key}.json"
        result = json.loads(s3.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
        s3.delete_object(Bucket=BUCKET, Key=result_key)
        wanted: dict[str, object] = {"size": size_mib * MIB}
        if reader == JOB:
            wanted |= {"sha256": expected.sha256, "lines": expected.lines}
        if any(result.get(name) != value for name, value in wanted.items()):
            raise SystemExit(f"{reader} got it wrong: {result}, expected {wanted}")
        startup = job_startup_cpu(confined.output)
        retried = retried_ranges(confined.output)
    elif f"{expected.sha256} {expected.newlines}" not in confined.output:
        raise SystemExit(f"{reader} got it wrong: {confined.output[-500:]}, expected {expected}")
    return Run(protocol, reader, vcpus, size_mib, confined, server_cpu, startup, retried)


def print_startup_steps(task_python: str, env: dict[str, str], samples: int, key: str) -> None:
    """The job's start-up step by step, now and before issue 22 (bench/startup_steps.py)."""
    figures: dict[str, list[dict[str, float]]] = {"now": [], "before": []}
    for _sample in range(samples):
        for way, found in figures.items():
            out = subprocess.run(
                [task_python, str(BENCH / "startup_steps.py"), way],
                cwd=REPO,
                env={
                    **env,
                    **image_environment(),
                    "S3_BUCKET": BUCKET,
                    "S3_KEY": key,  # read nothing of but its HEAD
                    "PYTHONPATH": str(REPO),
                },
                capture_output=True,
                text=True,
                check=True,
            )
            found.append(json.loads(out.stdout))
    print(
        f"\njob start-up over TLS, CPU-s by step (medians of {samples} runs each, unconfined; "
        "'before': as the job started before issue 22):"
    )
    print(f"  {'step':<42} {'now':>6} {'before':>7}")
    for name in figures["before"][0]:
        now = [sample[name] for sample in figures["now"] if name in sample]
        then = [sample[name] for sample in figures["before"]]
        shown = f"{statistics.median(now):6.3f}" if now else f"{'-':>6}"
        print(f"  {name:<42} {shown} {statistics.median(then):7.3f}")


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (an actual run, so its figures belong together)."""
    ordered = sorted(runs, key=lambda run: run.confined.seconds)
    return ordered[(len(ordered) - 1) // 2]


def print_table(runs: list[Run], protocol: str, size_mib: int, vcpus_list: list[float]) -> None:
    mine = [r for r in runs if (r.protocol, r.size_mib) == (protocol, size_mib)]
    count = max(sum(1 for r in mine if r.reader == JOB and r.vcpus == v) for v in vcpus_list)
    print(
        f"\n{PROTOCOLS[protocol]}: {size_mib} MiB object, median of {count} runs "
        "(the run with the median time):"
    )
    header = (
        f"{'reader':<18} {'vCPU':>4} {'seconds':>7} {'MiB/vCPU-s':>10} "
        f"{'CPU s (user+sys)':>17} {'start-up':>8} {'peak RSS':>8} {'nginx CPU/GiB':>13}"
    )
    print(header)
    print("-" * len(header))
    for vcpus in vcpus_list:
        for reader in READERS.values():
            group = [r for r in mine if r.reader == reader and r.vcpus == vcpus]
            if not group:
                continue
            run = median_run(group)
            c = run.confined
            spread = ", ".join(f"{r.confined.seconds:.2f}" for r in group)
            startup = "" if run.startup_cpu_seconds is None else f"{run.startup_cpu_seconds:.3f}"
            print(
                f"{reader:<18} {vcpus:>4g} {c.seconds:>7.2f} {run.mib_per_vcpu_second:>10.0f} "
                f"{c.cpu_seconds:>5.2f} ({c.user_seconds:.2f}+{c.system_seconds:.2f}) "
                f"{startup:>8} {c.peak_rss_mib:>4.0f} MiB "
                f"{run.server_cpu_seconds / (size_mib / 1024):>11.2f} s   (runs: {spread} s)"
            )


class Verdicts:
    """Prints each target as met or MISSED; counts the misses."""

    def __init__(self) -> None:
        self.missed = 0

    def __call__(self, ok: bool, text: str) -> None:
        self.missed += not ok
        print(f"  {'met   ' if ok else 'MISSED'}  {text}")


def check_targets(
    runs: list[Run], large: int, small: int | None, once: int | None, vcpus_list: list[float]
) -> int:
    """Print every target with its figure; the number missed."""
    verdict = Verdicts()
    if any(r.protocol == HTTPS for r in runs):
        print("\ntargets over TLS (issue 22):")
        check_tls_targets(verdict, runs, large, once, vcpus_list)
        check_memory(verdict, runs, HTTPS, large, small, once, vcpus_list)
    if any(r.protocol == HTTP for r in runs):
        print("\ntargets over plain HTTP (issue 12):")
        check_http_targets(verdict, runs, large, vcpus_list)
        check_memory(verdict, runs, HTTP, large, small, None, vcpus_list)
    return verdict.missed


def median(runs: list[Run], protocol: str, reader: str, vcpus: float, size: int) -> Run | None:
    """The median run of one reader in one setting, if it ran."""
    mine = timings(runs, protocol, reader, vcpus, size)
    return median_run(mine) if mine else None


def timings(runs: list[Run], protocol: str, reader: str, vcpus: float, size: int) -> list[Run]:
    """One reader's runs in one setting, in the order they ran (round by round)."""
    return [
        r
        for r in runs
        if (r.protocol, r.reader, r.vcpus, r.size_mib) == (protocol, reader, vcpus, size)
    ]


def check_tls_targets(
    verdict: Verdicts, runs: list[Run], large: int, once: int | None, vcpus_list: list[float]
) -> None:
    """Issue 22's targets: against aws-c-s3, per vCPU-second, start-up, linearity."""
    for vcpus in vcpus_list:
        job, crt = median(runs, HTTPS, JOB, vcpus, large), median(runs, HTTPS, AWSCRT, vcpus, large)
        if job is None:
            continue
        aim = "aim met" if job.mib_per_vcpu_second >= AIM_JOB else f"aim {AIM_JOB:.0f} not met"
        verdict(
            job.mib_per_vcpu_second >= TARGET_JOB,
            f"job >= {TARGET_JOB:.0f} MiB per vCPU-second at {vcpus:g} vCPU: "
            f"{job.mib_per_vcpu_second:.0f} ({job.confined.seconds:.2f} s; {aim})",
        )
        wanted = TARGET_SPEED_OVER_AWSCRT.get(vcpus)
        if crt is not None and wanted is not None:
            ratio = crt.confined.seconds / job.confined.seconds
            # The two run side by side in each round: the ratio round by round shows how much
            # of the medians' ratio is the machine's drift between rounds (not the verdict).
            rounds = ", ".join(
                f"{c.confined.seconds / j.confined.seconds:.2f}"
                for j, c in zip(
                    timings(runs, HTTPS, JOB, vcpus, large),
                    timings(runs, HTTPS, AWSCRT, vcpus, large),
                    strict=False,
                )
            )
            verdict(
                ratio >= wanted,
                f"job >= {wanted:.2f}x aws-c-s3's speed at {vcpus:g} vCPU: {ratio:.2f}x "
                f"({job.confined.seconds:.2f} s against {crt.confined.seconds:.2f} s; "
                f"round by round {rounds})",
            )
    frame = median(runs, HTTPS, FRAME, FRAME_TARGET_VCPUS, large)
    if frame is not None:
        verdict(
            frame.mib_per_vcpu_second >= TARGET_FRAME,
            f"frame alone >= {TARGET_FRAME:.0f} MiB per vCPU-second at "
            f"{FRAME_TARGET_VCPUS:g} vCPU: {frame.mib_per_vcpu_second:.0f} "
            f"({frame.confined.seconds:.2f} s)",
        )
    startups = [
        r.startup_cpu_seconds
        for r in runs
        if r.protocol == HTTPS and r.reader == JOB and r.startup_cpu_seconds is not None
    ]
    if startups:
        middle = statistics.median(startups)
        verdict(
            middle <= TARGET_STARTUP_CPU_SECONDS,
            f"job start-up (CPU from exec to the first range requested) <= "
            f"{TARGET_STARTUP_CPU_SECONDS} CPU-s: median {middle:.3f} of {len(startups)} "
            f"runs (lowest {min(startups):.3f}, highest {max(startups):.3f})",
        )
    if once is not None:
        big, base = (
            median(runs, HTTPS, JOB, ONCE_VCPUS, once),
            median(runs, HTTPS, JOB, ONCE_VCPUS, large),
        )
        if big is not None and base is not None:
            per_gib_big = big.confined.seconds / (once / 1024)
            per_gib = base.confined.seconds / (large / 1024)
            verdict(
                per_gib_big <= per_gib * (1 + TARGET_LINEAR),
                f"job time linear in size at {ONCE_VCPUS:g} vCPU (s per GiB at {once} MiB "
                f"<= {1 + TARGET_LINEAR:.2f}x that at {large} MiB): {per_gib_big:.2f} "
                f"against {per_gib:.2f} s per GiB ({big.confined.seconds:.2f} s, "
                f"{big.mib_per_vcpu_second:.0f} MiB per vCPU-second)",
            )


def check_http_targets(
    verdict: Verdicts, runs: list[Run], large: int, vcpus_list: list[float]
) -> None:
    """Issue 12's targets, as they were set: over plain HTTP."""
    for vcpus in vcpus_list:
        job, naive = median(runs, HTTP, JOB, vcpus, large), median(runs, HTTP, NAIVE, vcpus, large)
        if job is None:
            continue
        verdict(
            job.mib_per_vcpu_second >= TARGET_JOB_HTTP,
            f"job >= {TARGET_JOB_HTTP:.0f} MiB per vCPU-second at {vcpus:g} vCPU: "
            f"{job.mib_per_vcpu_second:.0f} ({job.confined.seconds:.2f} s)",
        )
        if naive is not None:
            verdict(
                job.confined.seconds <= naive.confined.seconds,
                f"never slower than the naive reader at {vcpus:g} vCPU: "
                f"{job.confined.seconds:.2f} s against {naive.confined.seconds:.2f} s",
            )
    frame = median(runs, HTTP, FRAME, FRAME_TARGET_VCPUS, large)
    if frame is not None:
        verdict(
            frame.mib_per_vcpu_second >= TARGET_FRAME_HTTP,
            f"frame alone >= {TARGET_FRAME_HTTP:.0f} MiB per vCPU-second at "
            f"{FRAME_TARGET_VCPUS:g} vCPU: {frame.mib_per_vcpu_second:.0f}",
        )


def check_memory(  # noqa: PLR0917 - one call site per protocol, each naming all
    verdict: Verdicts,
    runs: list[Run],
    protocol: str,
    large: int,
    small: int | None,
    once: int | None,
    vcpus_list: list[float],
) -> None:
    """Peak RSS under the limit in every job run, and flat from the smallest object up."""
    job_runs = [r for r in runs if (r.protocol, r.reader) == (protocol, JOB)]
    if not job_runs:
        return
    worst = max(job_runs, key=lambda r: r.confined.peak_rss_mib)
    verdict(
        worst.confined.peak_rss_mib < TARGET_RSS_MIB,
        f"job peak RSS < {TARGET_RSS_MIB:.0f} MiB in every run: highest "
        f"{worst.confined.peak_rss_mib:.0f} MiB ({worst.size_mib} MiB at {worst.vcpus:g} vCPU"
        + (f", {worst.retried_ranges} range(s) retried" if worst.retried_ranges else "")
        + ")",
    )

    def rss(vcpus: float, size: int) -> float | None:
        found = [
            r.confined.peak_rss_mib for r in job_runs if (r.vcpus, r.size_mib) == (vcpus, size)
        ]
        return statistics.median(found) if found else None

    if small is None:
        return
    for vcpus in vcpus_list:
        low = rss(vcpus, small)
        for size in (large, *([once] if once and vcpus == ONCE_VCPUS else [])):
            high = rss(vcpus, size)
            if low is None or high is None:
                continue
            growth = (high - low) / low
            verdict(
                growth <= TARGET_RSS_GROWTH,
                f"job peak RSS flat from {small} MiB to {size} MiB at {vcpus:g} vCPU "
                f"(<= {TARGET_RSS_GROWTH:.0%}): {low:.0f} -> {high:.0f} MiB, {growth:+.1%}",
            )


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


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
        "--once-mib",
        type=int,
        default=4096,
        help=f"an object the job reads once over TLS at {ONCE_VCPUS:g} vCPU, for linearity "
        "(0: none)",
    )
    parser.add_argument(
        "--readers",
        nargs="+",
        choices=list(READERS),
        default=list(READERS),
        help="which readers run on the largest object (the job always runs on the others)",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=list(PROTOCOLS),
        default=list(PROTOCOLS),
        help="https: the bench of record, as S3 is read on AWS; http: the second table",
    )
    parser.add_argument("--per-connection-mbps", type=float, default=90.0)
    parser.add_argument(
        "--startup-samples",
        type=int,
        default=9,
        help="runs of the job's start-up, step by step, now and as before (0: none)",
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
    return args


def schedule(
    args: argparse.Namespace, sizes: list[int], large: int
) -> Iterator[tuple[str, float, int, str]]:
    """(protocol, vCPUs, size, reader) of every run, round-robin, the once-run last."""
    chosen = [READERS[name] for name in args.readers]
    for _round in range(args.runs):
        for vcpus in args.vcpus:
            for protocol in args.protocols:
                for size in sizes:
                    for reader in chosen if size == large else [JOB]:
                        yield protocol, vcpus, size, reader
    if args.once_mib and HTTPS in args.protocols:
        yield HTTPS, ONCE_VCPUS, args.once_mib, JOB


def trust_bundle(task_python: str, certificate: Path, folder: Path) -> Path:
    """The CA file readers trust: botocore's own bundle (what the image's job loads) and ours.

    A bundle of one certificate would make every TLS start ~22 ms cheaper than on AWS. The
    job's slim botocore data is then built for it, as the image's is for botocore's bundle.
    """
    default = subprocess.run(
        [task_python, "-c", "from botocore.httpsession import where; print(where())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bundle = folder / "ca-bundle.pem"
    bundle.write_text(Path(default).read_text() + certificate.read_text())
    subprocess.run(
        [task_python, "-m", "task.botocore_data"],
        cwd=REPO,
        env={**os.environ, "AWS_CA_BUNDLE": str(bundle)},
        check=True,
        capture_output=True,
    )
    return bundle


def prepare(
    servers: dict[str, NginxS3],
    moto_url: str,
    bundle: Path,
    folder: Path,
    *,
    args: argparse.Namespace,
    sizes: list[int],
    large: int,
) -> tuple[S3Client, dict[int, Expected], dict[str, dict[str, str]]]:
    """Upload and publish every object, check each server; the readers' environments."""
    env = dict(os.environ)
    point_at_emulator(env, moto_url)
    os.environ.update(env)  # boto3 here: straight to moto for the setup
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    expected = {}
    for size in sizes:
        key, file = object_key(size), folder / f"{size}MiB.bin"
        with file.open("wb") as copy:
            expected[size] = upload(s3, key, size * MIB, copy)
        publish(list(servers.values()), s3, key, file)
        file.unlink()  # nginx's roots hold links to it
    for protocol, server in servers.items():
        mbps = check_server(server, object_key(large), args.per_connection_mbps)
        print(
            f"server: nginx {PROTOCOLS[protocol]} at {server.url} in front of moto, "
            f"keep-alive, {'TLS 1.2/1.3 AES-GCM, ' if protocol == HTTPS else ''}"
            f"each connection paced to {args.per_connection_mbps:g} MB/s "
            f"(curl: {mbps:.1f} MB/s); ETag/Last-Modified/If-Match/versionId checked"
        )
    print(
        "readers confined by a CFS quota; server and readers at nice "
        f"{os.getpriority(os.PRIO_PROCESS, 0)}"
    )
    envs = {}
    for protocol, server in servers.items():
        envs[protocol] = dict(env)
        point_at_emulator(envs[protocol], server.url)
        if protocol == HTTPS:  # botocore, and the awscrt reader, trust this file
            envs[protocol]["AWS_CA_BUNDLE"] = str(bundle)
    return s3, expected, envs


def main() -> int:
    args = parse_arguments()
    sizes = sorted(set(args.sizes_mib))
    large, small = sizes[-1], (sizes[0] if len(sizes) > 1 else None)
    once = args.once_mib or None
    # As the image does at build time: compiled code (the slim botocore data comes below).
    subprocess.run([args.task_python, "-m", "compileall", "-q", str(REPO / "task")], check=True)
    # Before any thread starts: threads and children inherit it.
    os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    share_stored_bytes_in_moto()
    list_moto_modules_once()
    print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), bench on Python "
        f"{platform.python_version()}, job on {task_python_version(args.task_python)}; "
        "load average before: " + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    runs: list[Run] = []
    began = time.monotonic()
    try:
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-task-")))
            certificate = folder / "cert.pem"
            self_signed_tls(certificate)
            bundle = trust_bundle(args.task_python, certificate, folder)
            moto_url, _meter = stack.enter_context(moto_server(args.per_connection_mbps))
            servers = {
                protocol: stack.enter_context(
                    nginx_s3(
                        moto_url,
                        args.per_connection_mbps,
                        tls=(certificate, folder / "key.pem") if protocol == HTTPS else None,
                    )
                )
                for protocol in args.protocols
            }
            s3, expected, envs = prepare(
                servers,
                moto_url,
                bundle,
                folder,
                args=args,
                sizes=[*sizes, *([once] if once else [])],
                large=large,
            )
            if HTTPS in envs and args.startup_samples:
                print_startup_steps(
                    args.task_python, envs[HTTPS], args.startup_samples, object_key(sizes[0])
                )
            for protocol, vcpus, size, reader in schedule(args, sizes, large):
                run = measure(
                    s3,
                    servers[protocol],
                    protocol,
                    reader,
                    vcpus=vcpus,
                    size_mib=size,
                    expected=expected[size],
                    task_python=args.task_python,
                    env=envs[protocol],
                )
                runs.append(run)
                startup = run.startup_cpu_seconds
                print(
                    f"  {protocol:<5} {reader:<18} {vcpus:>4g} vCPU {size:>5} MiB: "
                    f"{run.confined.seconds:6.2f} s, {run.mib_per_vcpu_second:5.0f} MiB/vCPU-s, "
                    f"CPU {run.confined.cpu_seconds:.2f} s"
                    + (f" (start-up {startup:.3f})" if startup is not None else "")
                    + f", RSS {run.confined.peak_rss_mib:.0f} MiB"
                    + (
                        f", {run.retried_ranges} range(s) read again through botocore"
                        if run.retried_ranges
                        else ""
                    ),
                    flush=True,
                )
    except (QuotaUnavailableError, NginxUnavailableError) as error:
        print(f"cannot run: {error}", file=sys.stderr)
        return 2
    print(f"\n{time.monotonic() - began:.0f} s in all")
    for protocol in args.protocols:
        print_table(runs, protocol, large, args.vcpus)
        if once and protocol == HTTPS:
            print_table(runs, protocol, once, [ONCE_VCPUS])
    print("load average after: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
    missed = check_targets(runs, large, small, once, args.vcpus)
    print(f"\nexit status {1 if missed else 0}: {missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
