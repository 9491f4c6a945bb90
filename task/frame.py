"""The reusable frame around a processor: settings, stream, result, exit code, signals, logs.

`main()` is what `python -m task` runs; `run()` is the same job for a given Settings and
processor (tests and other entry points call it directly).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any, cast

import botocore.session
from botocore.config import Config

from task.botocore_data import slim_loader
from task.download import (
    CONNECT_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    DownloadError,
    ObjectChangedError,
    ObjectUnavailableError,
    RequestRejectedError,
    describe,
    iter_chunks,
)
from task.exit_codes import ExitCode
from task.logs import log, utc_now
from task.objects import ObjectInfo, Processor, wants_views
from task.settings import Settings, SettingsError, load_processor

if TYPE_CHECKING:
    from types import FrameType

    from mypy_boto3_s3 import S3Client

MB = 1_000_000  # throughput in logs is MB/s (10^6 bytes), as network figures are quoted
# After the time limit the main thread gets SIGALRM and stops cleanly; should it be stuck where
# a signal cannot reach it (a long call into C), the process ends this much later regardless.
HARD_DEADLINE_GRACE_SECONDS = 20
RESERVED_FIELDS = (
    "bucket",
    "key",
    "versionId",
    "startedAt",
    "finishedAt",
    "seconds",
    "bytesPerSecond",
)


class TaskStopped(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT.

    A BaseException, like KeyboardInterrupt, so a processor's `except Exception` cannot
    swallow it and go on to write a result.
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class StopSignals:
    """Turns SIGTERM/SIGINT into TaskStopped until the result is being written.

    Once the whole object is processed the result write (one small PUT, atomic in S3) is
    let finish: stopping then would only throw finished work away.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._committed = threading.Event()

    def handle(self, signal_number: int, _frame: FrameType | None = None) -> None:
        first = self.received is None
        self.received = signal_number
        # Only the first stops the work: a second one (ECS repeats SIGTERM, or the time limit
        # fires meanwhile) must not break into the failure line the first one is writing.
        if first and not self._committed.is_set():
            raise TaskStopped(signal_number)

    def commit(self) -> None:
        self._committed.set()


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the job for the object the environment names; return the process exit code."""
    environ = os.environ if environ is None else environ
    started_at = utc_now()
    try:
        settings = Settings.from_environ(environ)
        processor = load_processor(settings.processor_spec)
    except SettingsError as error:
        return _fail(
            ExitCode.BAD_SETTINGS,
            str(error),
            "the task definition's environment and the runner's container overrides",
        )
    stop = StopSignals()
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
    previous = {number: signal.signal(number, stop.handle) for number in handled}
    deadline = None
    if settings.timeout_seconds:
        signal.setitimer(signal.ITIMER_REAL, settings.timeout_seconds)
        deadline = _hard_deadline(settings.timeout_seconds + HARD_DEADLINE_GRACE_SECONDS)
    try:
        return run(settings, processor, stop=stop, started_at=started_at)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if deadline is not None:
            deadline.cancel()
        for number, handler in previous.items():
            signal.signal(number, handler)


def _hard_deadline(seconds: float) -> threading.Timer:
    def expire() -> None:
        _fail(
            ExitCode.TIMED_OUT,
            f"still running {seconds:.0f} s after start, past the time limit and its grace; "
            "ended without a result",
            "the last progress line: a download stalled on S3 or a processor stuck in one "
            "call; raise taskTimeoutMinutes if the object is simply large",
        )
        os._exit(ExitCode.TIMED_OUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def make_client(settings: Settings, environ: Mapping[str, str] | None = None) -> S3Client:
    """An S3 client with a connection per concurrent range; AWS_* variables are honoured.

    Made with botocore alone: boto3 would add only its import (and s3transfer's), about
    0.1 CPU-second at every start, which a quarter-vCPU task pays as 0.4 s.
    """
    environ = os.environ if environ is None else environ
    config = Config(
        max_pool_connections=settings.concurrency + 2,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        # Requests are SigV4-signed already; this makes the presigned URLs of the direct
        # download SigV4 too (botocore presigns S3 with the legacy SigV2 by default).
        signature_version="s3v4",
    )
    # botocore reads only AWS_DEFAULT_REGION; ECS and Lambda also set AWS_REGION.
    region = environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or None
    session = botocore.session.get_session()
    loader = slim_loader()
    if loader is not None:  # built with the image: ~0.06 CPU-s less per start (see there)
        session.register_component("data_loader", loader)
    client = session.create_client("s3", region_name=region, config=config)
    return cast("S3Client", client)


def run(
    settings: Settings,
    processor: Processor,
    *,
    client: S3Client | None = None,
    stop: StopSignals | None = None,
    started_at: str | None = None,
) -> ExitCode:
    """Stream the object through the processor and write its result; never raise."""
    started_at = started_at or utc_now()
    began = time.monotonic()
    stream: _Progress | None = None
    phase = "prepare"  # what a failure is blamed on: prepare, process or write
    where = f"s3://{settings.bucket}/{settings.key}"
    try:
        client = client or make_client(settings)
        obj, direct = describe(client, settings.bucket, settings.key, settings.version_id)
        log(
            "start",
            bucket=obj.bucket,
            key=obj.key,
            versionId=obj.version_id,
            size=obj.size,
            partSize=settings.part_size,
            concurrency=settings.concurrency,
            vcpus=settings.cpu_limit.vcpus if settings.cpu_limit else None,
            vcpusFrom=settings.cpu_limit.source if settings.cpu_limit else None,
            processor=settings.processor_spec,
        )
        phase = "process"
        first_range_cpu: list[float] = []
        stream = _Progress(
            iter_chunks(
                client,
                obj,
                settings.part_size,
                settings.concurrency,
                on_first_request=lambda: first_range_cpu.append(time.process_time()),
                direct=direct,
                views=wants_views(processor),
            ),
            obj.size,
            settings.progress_interval,
        )
        with closing(stream):
            output = processor(stream, obj)
        stream.raise_if_failed()  # in case the processor caught a download error and went on
        seconds = time.monotonic() - began
        body = _result_body(output, obj, started_at, seconds)
        if stop is not None:
            stop.commit()
        phase = "write"
        client.put_object(
            Bucket=settings.result_bucket,
            Key=settings.result_key,
            Body=body,
            ContentType="application/json",
        )
    except TaskStopped as stopped:
        name = signal.Signals(stopped.signal_number).name
        if stopped.signal_number == signal.SIGALRM:
            return _fail(
                ExitCode.TIMED_OUT,
                f"ran longer than its time limit (TASK_TIMEOUT_SECONDS={settings.timeout_seconds}) "
                f"on {where}; stopped, no result written",
                "whether the object is larger than usual or the processor slower; raise the "
                "stack's taskTimeoutMinutes if the limit is too tight",
            )
        return _fail(
            ExitCode.for_signal(stopped.signal_number),
            f"{name} received while processing {where}; stopped, no result written",
            "whether the task was stopped by a person, a deployment, or a Fargate Spot "
            "reclaim; upload the object again (or redrive) to process it",
            level="warning",
        )
    except Exception as error:  # every failure must end as a logged exit code
        return _classify(error, phase, stream, settings)
    mb_per_second = round(obj.size / seconds / MB, 2) if seconds > 0 else None
    log(
        "finish",
        bucket=obj.bucket,
        key=obj.key,
        versionId=obj.version_id,
        size=obj.size,
        seconds=round(seconds, 3),
        mbPerSecond=mb_per_second,
        resultBucket=settings.result_bucket,
        resultKey=settings.result_key,
        exitCode=int(ExitCode.OK),
        # What the task was billed for, and how much of it went before the first byte came:
        # CPU of the whole process (every thread) since exec.
        cpuSeconds=round(time.process_time(), 3),
        firstRangeCpuSeconds=round(first_range_cpu[0], 3) if first_range_cpu else None,
    )
    return ExitCode.OK


class _ProcessorOutputError(Exception):
    """The processor returned something that cannot be written as the JSON result."""


def _result_body(output: object, obj: ObjectInfo, started_at: str, seconds: float) -> bytes:
    if not isinstance(output, Mapping):
        raise _ProcessorOutputError(
            f"the processor returned {type(output).__name__}, not a dict of result fields"
        )
    result: dict[str, Any] = {str(name): value for name, value in output.items()}
    # The frame's fields win: they describe what was read, whatever the processor says.
    result.update(
        bucket=obj.bucket,
        key=obj.key,
        versionId=obj.version_id,
        startedAt=started_at,
        finishedAt=utc_now(),
        seconds=round(seconds, 3),
        bytesPerSecond=round(obj.size / seconds) if seconds > 0 else None,
    )
    try:
        return json.dumps(result, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise _ProcessorOutputError(
            f"the processor's result is not JSON-serialisable: {error}"
        ) from error


def _classify(
    error: Exception, phase: str, stream: _Progress | None, settings: Settings
) -> ExitCode:
    # A download error surfaces through the processor's loop; the stream remembers it, so a
    # processor that wraps it in its own exception is still reported as what it was.
    if stream is not None and stream.error is not None:
        error = stream.error
    where = f"s3://{settings.bucket}/{settings.key}"
    if settings.version_id:
        where += f" (version {settings.version_id})"
    known = _known_failure(error, where)
    if known is not None:
        code, check = known
        return _fail(code, str(error), check)
    if phase == "write":
        return _fail(
            ExitCode.RESULT_NOT_WRITTEN,
            f"writing s3://{settings.result_bucket}/{settings.result_key} failed: {error}",
            "that the task role allows s3:PutObject on the result prefix, the result bucket "
            "exists, and prefix + key + .json is at most 1024 bytes",
        )
    if phase == "process":
        return _fail(
            ExitCode.PROCESSING_FAILED,
            f"the processor {settings.processor_spec} failed on {where}: "
            f"{type(error).__name__}: {error}",
            "the processor's code against this object (the traceback is in this line)",
            traceback="".join(traceback.format_exception(error)),
        )
    return _fail(
        ExitCode.UNEXPECTED,
        f"unexpected error before processing {where}: {type(error).__name__}: {error}",
        "the traceback in this line; AWS_REGION / AWS_ENDPOINT_URL and the task role",
        traceback="".join(traceback.format_exception(error)),
    )


def _known_failure(error: Exception, where: str) -> tuple[ExitCode, str] | None:
    """The exit code and what to check for the download's own errors; None for others."""
    if isinstance(error, ObjectUnavailableError):
        return (
            ExitCode.OBJECT_UNAVAILABLE,
            f"that {where} still exists (it may have been deleted after the upload) and that "
            "the task role allows s3:GetObject and s3:GetObjectVersion on it",
        )
    if isinstance(error, RequestRejectedError):
        return (
            ExitCode.BAD_SETTINGS,
            "S3_BUCKET, S3_KEY and S3_VERSION_ID as the runner passed them: a bucket name S3 "
            "accepts, a non-empty key, a version id from S3",
        )
    if isinstance(error, ObjectChangedError):
        return (
            ExitCode.OBJECT_CHANGED,
            "nothing to fix: the overwrite has its own upload event and task; enable bucket "
            "versioning so every task reads the version it was started for",
        )
    if isinstance(error, DownloadError):
        return (
            ExitCode.DOWNLOAD_FAILED,
            "S3 throttling (503 SlowDown), the network path to S3 (NAT / VPC endpoint) and "
            "the task role's credentials; the task can be retried",
        )
    return None


def _fail(code: ExitCode, error: str, check: str, level: str = "error", **extra: Any) -> ExitCode:
    log(
        "failed",
        level=level,
        exitCode=int(code),
        reason=code.name,
        error=error,
        check=check,
        **extra,
    )
    return code


class _Progress(Iterator[bytes]):
    """The chunk stream as the processor sees it: counts bytes, logs progress, keeps errors."""

    def __init__(self, chunks: Iterator[bytes], size: int, interval: float) -> None:
        self._chunks = chunks
        self._size = size
        self._interval = interval
        self._began = time.monotonic()
        self._last_log = self._began
        self.done = 0
        self.error: DownloadError | None = None

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except DownloadError as error:
            self.error = error
            raise
        self.done += len(chunk)
        now = time.monotonic()
        if now - self._last_log >= self._interval:
            self._last_log = now
            elapsed = now - self._began
            log(
                "progress",
                bytesDone=self.done,
                size=self._size,
                percent=round(100 * self.done / self._size, 1) if self._size else 100.0,
                mbPerSecond=round(self.done / elapsed / MB, 2) if elapsed > 0 else None,
            )
        return chunk

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
