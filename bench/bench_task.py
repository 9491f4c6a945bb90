"""Benchmark of the task job (`python -m task`) against a loopback S3 server (moto).

Puts a 256 MiB and a 1 GiB object on the emulator, then for each size reports the job's
throughput, a plain single-stream `get_object` read of the same object to /dev/null in the
same run, and the job's peak RSS. Both readers are child processes of this one, so each
measures its own memory and neither shares a GIL with the server.

moto serves a ranged GET by reading the whole object and slicing it, so each 8 MiB range of
a 1 GiB object costs a 1 GiB copy in the emulator (real S3 serves a range in proportion to
the range). Unless --moto-as-is is given, the bench keeps objects in memory and has moto
share the stored bytes instead of copying them, so a range costs only its own length and the
figures measure the job, not the emulator's shortcut.

Run: venv/bin/python bench/bench_task.py [--sizes-mib 256 1024] [--moto-as-is]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3
from boto3.s3.transfer import TransferConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobctl.emulator import point_at_emulator, running_emulator  # noqa: E402

MIB = 1024 * 1024
MB = 1_000_000
BUCKET = "bench-task"
TARGET_RSS_MB = 150
TARGET_RSS_GROWTH = 0.10
TARGET_SPEED_RATIO = 0.9


class PatternReader(io.RawIOBase):
    """`size` bytes of a repeated random block, produced as read: nothing held whole."""

    def __init__(self, size: int) -> None:
        self._block = os.urandom(MIB + 7)  # an odd length, so parts never repeat exactly
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._position)
        written = 0
        while written < wanted:
            offset = (self._position + written) % len(self._block)
            piece = self._block[offset : offset + wanted - written]
            buffer[written : written + len(piece)] = piece
            written += len(piece)
        self._position += written
        return written


# Runs one command and reports its own peak RSS. A fresh, small launcher process, because a
# child's ru_maxrss also counts the memory of the process it was forked from (here: the
# emulator holding the objects).
MEASURE = """
import json, os, subprocess, sys, time
began = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_pid, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"seconds": time.monotonic() - began, "maxrssKiB": usage.ru_maxrss,
                  "exitCode": os.waitstatus_to_exitcode(status)}))
"""


def share_stored_bytes_in_moto() -> None:
    """Have moto hand out its stored bytes without a copy, so a range costs its own length."""
    from moto.s3.models import FakeKey

    os.environ["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(4 * 1024 * MIB)  # keep keys in memory

    def value(self: Any) -> bytes:
        with self.lock:
            # BytesIO.getvalue() shares its buffer once sized; read() would copy it all.
            return bytes(self._value_buffer._file.getvalue())

    patched = cast("Any", FakeKey)
    patched.value = property(value, patched.value.fset)


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    exit_code: int


def run_child(argv: list[str], env: dict[str, str]) -> Measure:
    """Run a child to completion through the launcher; its time, peak RSS and exit code."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    figures = json.loads(out)
    return Measure(figures["seconds"], figures["maxrssKiB"] * 1024 / MB, figures["exitCode"])


def plain_read(bucket: str, key: str) -> None:
    """The baseline: one GET, one connection, body streamed to /dev/null."""
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    with open(os.devnull, "wb") as sink:
        for chunk in body.iter_chunks(MIB):
            sink.write(chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--plain-read", nargs=2, metavar=("BUCKET", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help="DOWNLOAD_CONCURRENCY for the job")
    parser.add_argument("--moto-as-is", action="store_true", help="do not patch moto")
    args = parser.parse_args()
    if args.plain_read:
        plain_read(*args.plain_read)
        return 0

    if not args.moto_as_is:
        share_stored_bytes_in_moto()
    print(
        f"machine: {os.cpu_count()} cores; emulator: moto server on 127.0.0.1 "
        f"({'as is' if args.moto_as_is else 'ranges served without whole-object copies'})"
    )
    rows: list[dict[str, float | int]] = []
    with running_emulator() as url:
        point_at_emulator(os.environ, url)  # this process, and so every child it starts
        env = dict(os.environ)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for size_mib in args.sizes_mib:
            key = f"bench/{size_mib}MiB.bin"
            size = size_mib * MIB
            s3.upload_fileobj(
                io.BufferedReader(PatternReader(size), MIB),
                BUCKET,
                key,
                Config=TransferConfig(multipart_chunksize=64 * MIB, max_concurrency=4),
            )
            job_env = {
                **env,
                "S3_BUCKET": BUCKET,
                "S3_KEY": key,
                "RESULT_PREFIX": "results/",
                "MALLOC_ARENA_MAX": "2",  # as task/Dockerfile sets it in the image
                **({"DOWNLOAD_CONCURRENCY": str(args.concurrency)} if args.concurrency else {}),
            }
            plain = run_child([sys.executable, __file__, "--plain-read", BUCKET, key], env)
            job = run_child([sys.executable, "-m", "task"], job_env)
            result = json.loads(
                s3.get_object(Bucket=BUCKET, Key=f"results/{key}.json")["Body"].read()
            )
            if job.exit_code != 0 or result["size"] != size:
                raise SystemExit(f"the job failed: {job}, {result}")
            row = {
                "sizeMiB": size_mib,
                "jobMBps": size / job.seconds / MB,
                "jobInsideMBps": result["bytesPerSecond"] / MB,
                "plainMBps": size / plain.seconds / MB,
                "jobPeakRssMB": job.peak_rss_mb,
                "plainPeakRssMB": plain.peak_rss_mb,
            }
            rows.append(row)
            print(
                f"{size_mib:>5} MiB: job {row['jobMBps']:7.1f} MB/s "
                f"(process start to exit; {row['jobInsideMBps']:.1f} MB/s head to last byte), "
                f"plain get_object {row['plainMBps']:7.1f} MB/s, "
                f"ratio {row['jobMBps'] / row['plainMBps']:.2f}; "
                f"job peak RSS {row['jobPeakRssMB']:.1f} MB "
                f"(plain reader {row['plainPeakRssMB']:.1f} MB)",
                flush=True,
            )
            s3.delete_object(Bucket=BUCKET, Key=key)
    return report(rows)


def report(rows: list[dict[str, float | int]]) -> int:
    """Print the targets and whether each was met; exit 1 if any was missed."""
    missed = 0
    for row in rows:
        ratio = row["jobMBps"] / row["plainMBps"]
        ok = ratio >= TARGET_SPEED_RATIO
        missed += not ok
        print(
            f"target job >= {TARGET_SPEED_RATIO}x plain at {row['sizeMiB']} MiB: "
            f"{ratio:.2f} {'met' if ok else 'MISSED'}"
        )
        ok = row["jobPeakRssMB"] < TARGET_RSS_MB
        missed += not ok
        print(
            f"target peak RSS < {TARGET_RSS_MB} MB at {row['sizeMiB']} MiB: "
            f"{row['jobPeakRssMB']:.1f} {'met' if ok else 'MISSED'}"
        )
    if len(rows) >= 2:
        small, large = rows[0]["jobPeakRssMB"], rows[-1]["jobPeakRssMB"]
        growth = (large - small) / small
        ok = growth <= TARGET_RSS_GROWTH
        missed += not ok
        print(
            f"target peak RSS growth {rows[0]['sizeMiB']} -> {rows[-1]['sizeMiB']} MiB "
            f"<= {TARGET_RSS_GROWTH:.0%}: {growth:+.1%} {'met' if ok else 'MISSED'}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
