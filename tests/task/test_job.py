"""The whole job in-process against loopback S3: results, failures, exit codes, log lines."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from task.exit_codes import ExitCode
from task.frame import StopSignals, TaskStopped, run
from task.objects import ObjectInfo, takes_views
from task.processor import process
from task.settings import Settings
from tests.task.conftest import SMALL_PART, log_lines, read_result, result_keys
from tests.task.processors import first_line

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MakeSettings = Callable[..., Settings]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello\nworld\n", id="small"),
        pytest.param(os.urandom(17 * SMALL_PART + 333), id="multipart-sized"),
    ],
)
def test_the_result_holds_the_sha256_hashlib_computes_for_the_same_bytes(
    s3: S3Client, bucket: str, settings_for: MakeSettings, data: bytes
) -> None:
    s3.put_object(Bucket=bucket, Key="in/file.bin", Body=data)
    assert run(settings_for(bucket, "in/file.bin"), process) == ExitCode.OK
    result = read_result(s3, bucket, "in/file.bin")
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["size"] == len(data)


def test_the_result_lands_at_prefix_plus_key_with_every_documented_field(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.put_object(Bucket=bucket, Key="in/table.csv", Body=b"a,b\n1,2\n3,4")
    assert run(settings_for(bucket, "in/table.csv"), process) == ExitCode.OK
    assert result_keys(s3, bucket) == ["results/in/table.csv.json"]
    result = read_result(s3, bucket, "in/table.csv")
    assert set(result) == {
        "size",
        "sha256",
        "lines",
        "contentType",
        "bucket",
        "key",
        "versionId",
        "startedAt",
        "finishedAt",
        "seconds",
        "bytesPerSecond",
    }
    assert (result["bucket"], result["key"], result["versionId"]) == (bucket, "in/table.csv", None)
    assert (result["lines"], result["contentType"]) == (3, "text/csv")
    assert result["startedAt"] <= result["finishedAt"]
    assert result["seconds"] >= 0
    lines = log_lines(capsys.readouterr().out)
    assert [lines[0]["event"], lines[-1]["event"]] == ["start", "finish"]
    # What the task was billed for, and how much of it went before the first range was asked.
    finish = lines[-1]
    assert 0 < finish["firstRangeCpuSeconds"] <= finish["cpuSeconds"]


def test_results_can_go_to_another_bucket_and_prefix(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    other = f"{bucket}-results"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    settings = settings_for(bucket, "k", result_bucket=other, result_prefix="done/")
    assert run(settings, process) == ExitCode.OK
    assert s3.head_object(Bucket=other, Key="done/k.json")["ContentType"] == "application/json"


def test_a_key_with_spaces_and_unicode_is_read_and_its_result_named_after_it(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    key = "uploads/r\u00e9sum\u00e9 final + copy \u6587\u4ef6.txt"
    s3.put_object(Bucket=bucket, Key=key, Body="na\u00efve\n".encode())
    assert run(settings_for(bucket, key), process) == ExitCode.OK
    assert result_keys(s3, bucket) == [f"results/{key}.json"]
    assert read_result(s3, bucket, key)["key"] == key


def test_a_versioned_object_is_read_whole_from_its_version_while_the_key_is_overwritten(
    s3: S3Client, versioned_bucket: str, settings_for: MakeSettings
) -> None:
    original = os.urandom(12 * SMALL_PART)
    first = s3.put_object(Bucket=versioned_bucket, Key="k", Body=original)["VersionId"]

    def overwrite_after_first_chunk(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        digest = hashlib.sha256(next(chunks))
        s3.put_object(Bucket=versioned_bucket, Key="k", Body=b"new" * SMALL_PART)
        for chunk in chunks:
            digest.update(chunk)
        return {"sha256": digest.hexdigest()}

    settings = settings_for(versioned_bucket, "k", concurrency=2)
    assert run(settings, overwrite_after_first_chunk) == ExitCode.OK
    assert read_result(s3, versioned_bucket, "k")["sha256"] == hashlib.sha256(original).hexdigest()
    assert s3.get_object(Bucket=versioned_bucket, Key="k")["VersionId"] != first
    assert read_result(s3, versioned_bucket, "k")["versionId"] == first


def test_an_older_version_named_by_s3_version_id_is_the_one_processed(
    s3: S3Client, versioned_bucket: str, settings_for: MakeSettings
) -> None:
    first = s3.put_object(Bucket=versioned_bucket, Key="k", Body=b"first\n")["VersionId"]
    s3.put_object(Bucket=versioned_bucket, Key="k", Body=b"second version\n")
    assert run(settings_for(versioned_bucket, "k", version_id=first), process) == ExitCode.OK
    result = read_result(s3, versioned_bucket, "k")
    assert result["sha256"] == hashlib.sha256(b"first\n").hexdigest()
    assert result["versionId"] == first


def test_an_unversioned_overwrite_mid_read_fails_with_no_result(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"a" * (12 * SMALL_PART))

    def overwrite_then_hash(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        s3.put_object(Bucket=bucket, Key="k", Body=b"b" * (12 * SMALL_PART))
        return process(chunks, obj)

    settings = settings_for(bucket, "k", concurrency=1)
    assert run(settings, overwrite_then_hash) == ExitCode.OBJECT_CHANGED
    assert result_keys(s3, bucket) == []
    assert log_lines(capsys.readouterr().out)[-1]["reason"] == "OBJECT_CHANGED"


def test_a_missing_object_exits_object_unavailable_saying_what_to_check(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(settings_for(bucket, "gone.csv"), process) == ExitCode.OBJECT_UNAVAILABLE
    [line] = log_lines(capsys.readouterr().out)
    assert line["event"] == "failed"
    assert line["level"] == "error"
    assert line["exitCode"] == 3 == int(ExitCode.OBJECT_UNAVAILABLE)
    assert f"s3://{bucket}/gone.csv" in line["error"]
    assert "s3:GetObject" in line["check"]
    assert result_keys(s3, bucket) == []


def test_a_bucket_name_s3_cannot_accept_is_a_settings_error_not_a_retryable_one(
    emulator_env: str, settings_for: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings_for("my bucket", "a.csv"), process) == ExitCode.BAD_SETTINGS
    [line] = log_lines(capsys.readouterr().out)
    assert line["reason"] == "BAD_SETTINGS"
    assert "s3://my bucket/a.csv" in line["error"]
    assert "S3_BUCKET" in line["check"]


def test_a_custom_processor_replaces_the_default_and_the_frame_adds_its_fields(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    s3.put_object(Bucket=bucket, Key="k.txt", Body=b"title line\n" + b"x" * (5 * SMALL_PART))
    assert run(settings_for(bucket, "k.txt"), first_line) == ExitCode.OK
    result = read_result(s3, bucket, "k.txt")
    assert result["firstLine"] == "title line"
    assert result["key"] == "k.txt"
    assert "sha256" not in result


def test_a_processor_marked_takes_views_gets_memoryviews_and_any_other_gets_bytes(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    data = os.urandom(5 * SMALL_PART + 1)
    s3.put_object(Bucket=bucket, Key="k.bin", Body=data)
    seen: dict[str, set[type]] = {}

    def record(name: str) -> Callable[[Iterator[Any], ObjectInfo], dict[str, Any]]:
        def processor(chunks: Iterator[Any], obj: ObjectInfo) -> dict[str, Any]:
            digest = hashlib.sha256()
            for chunk in chunks:
                seen.setdefault(name, set()).add(type(chunk))
                digest.update(chunk)
            return {"sha256": digest.hexdigest()}

        return processor

    assert run(settings_for(bucket, "k.bin"), takes_views(record("marked"))) == ExitCode.OK
    assert read_result(s3, bucket, "k.bin")["sha256"] == hashlib.sha256(data).hexdigest()
    assert run(settings_for(bucket, "k.bin"), record("plain")) == ExitCode.OK
    assert seen == {"marked": {memoryview}, "plain": {bytes}}


def test_a_failing_processor_exits_processing_failed_with_its_traceback_and_no_result(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * (4 * SMALL_PART))

    def broken(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        next(chunks)
        raise ValueError("cannot parse row 1")

    assert run(settings_for(bucket, "k"), broken) == ExitCode.PROCESSING_FAILED
    line = log_lines(capsys.readouterr().out)[-1]
    assert "ValueError: cannot parse row 1" in line["error"]
    assert "broken" in line["traceback"]
    assert result_keys(s3, bucket) == []


def test_a_result_that_is_not_json_is_a_processing_failure(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")

    def returns_a_set(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        return {"values": {1, 2}}

    assert run(settings_for(bucket, "k"), returns_a_set) == ExitCode.PROCESSING_FAILED
    assert result_keys(s3, bucket) == []


def test_a_processor_that_swallows_a_download_error_still_writes_no_result(
    s3: S3Client, bucket: str, settings_for: MakeSettings
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"a" * (8 * SMALL_PART))

    def careless(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        s3.delete_object(Bucket=bucket, Key="k")
        with contextlib.suppress(Exception):
            for _chunk in chunks:
                pass
        return {"ok": True}

    outcome = run(settings_for(bucket, "k", concurrency=1), careless)
    assert outcome == ExitCode.OBJECT_UNAVAILABLE
    assert result_keys(s3, bucket) == []


def test_a_stop_signal_mid_processing_exits_stopped_with_no_result(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * (8 * SMALL_PART))
    stop = StopSignals()

    def stopped_midway(chunks: Iterator[bytes], obj: ObjectInfo) -> dict[str, Any]:
        next(chunks)
        with contextlib.suppress(Exception):  # a processor's broad except must not hide it
            stop.handle(signal.SIGTERM)
        return {}

    assert run(settings_for(bucket, "k"), stopped_midway, stop=stop) == ExitCode.STOPPED
    line = log_lines(capsys.readouterr().out)[-1]
    assert (line["event"], line["exitCode"], line["level"]) == ("failed", 143, "warning")
    assert "SIGTERM" in line["error"]
    assert result_keys(s3, bucket) == []


def test_a_second_stop_signal_does_not_break_into_the_first_ones_failure_line() -> None:
    stop = StopSignals()
    with pytest.raises(TaskStopped):
        stop.handle(signal.SIGTERM)
    stop.handle(signal.SIGTERM)  # ECS may repeat it while the first is being reported
    stop.handle(signal.SIGALRM)
    assert stop.received == signal.SIGALRM


def test_progress_is_logged_for_long_objects(
    s3: S3Client,
    bucket: str,
    settings_for: MakeSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * (4 * SMALL_PART))
    assert run(settings_for(bucket, "k", progress_interval=1e-9), process) == ExitCode.OK
    progress = [line for line in log_lines(capsys.readouterr().out) if line["event"] == "progress"]
    assert progress
    assert progress[-1]["bytesDone"] == 4 * SMALL_PART
    assert progress[-1]["percent"] == 100.0
