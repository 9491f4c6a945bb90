"""Settings come from the environment and fail with messages that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from task.processor import process
from task.resources import available_cpus
from task.settings import (
    MIB,
    Settings,
    SettingsError,
    load_processor,
    part_size_for,
    planned_concurrency,
)

REQUIRED = {"S3_BUCKET": "uploads", "S3_KEY": "in/a file.csv"}


def test_only_bucket_and_key_are_required_and_the_rest_has_safe_defaults() -> None:
    settings = Settings.from_environ(REQUIRED)
    assert settings.bucket == "uploads"
    assert settings.key == "in/a file.csv"
    assert settings.version_id is None
    assert settings.result_bucket == "uploads"
    assert settings.result_prefix == "results/"
    assert settings.result_key == "results/in/a file.csv.json"
    assert settings.processor_spec == "task.processor:process"


def test_the_download_is_sized_from_the_cpu_the_task_may_use() -> None:
    settings = Settings.from_environ(REQUIRED)
    assert settings.cpu_limit == available_cpus(REQUIRED)
    assert settings.concurrency == planned_concurrency(settings.cpu_limit.vcpus)
    assert settings.part_size == part_size_for(settings.concurrency)


@pytest.mark.parametrize(
    ("vcpus", "part_mib", "concurrency"),
    [(0.25, 8, 4), (0.5, 8, 6), (1, 6, 10), (2, 4, 16), (16, 4, 16)],
)
def test_a_bigger_task_reads_more_ranges_at_once_in_buffers_of_bounded_size(
    vcpus: float, part_mib: int, concurrency: int
) -> None:
    assert planned_concurrency(vcpus) == concurrency
    assert part_size_for(concurrency) == part_mib * MIB
    assert (concurrency + 1) * part_size_for(concurrency) <= 72 * MIB


def test_a_part_size_given_without_a_concurrency_keeps_the_planned_concurrency() -> None:
    settings = Settings.from_environ({**REQUIRED, "DOWNLOAD_PART_SIZE": "16MiB"})
    assert settings.part_size == 16 * MIB
    assert settings.cpu_limit is not None
    assert settings.concurrency == planned_concurrency(settings.cpu_limit.vcpus)


def test_every_optional_setting_is_read_from_its_variable() -> None:
    settings = Settings.from_environ(
        {
            **REQUIRED,
            "S3_VERSION_ID": "v1",
            "RESULT_BUCKET": "results-bucket",
            "RESULT_PREFIX": "out/",
            "DOWNLOAD_PART_SIZE": "16MiB",
            "DOWNLOAD_CONCURRENCY": "12",
            "PROGRESS_INTERVAL_SECONDS": "0.5",
            "TASK_PROCESSOR": "tests.task.processors:slow",
        }
    )
    assert settings.version_id == "v1"
    assert settings.result_bucket == "results-bucket"
    assert settings.result_key == "out/in/a file.csv.json"
    assert settings.part_size == 16 * MIB
    assert settings.concurrency == 12
    assert settings.progress_interval == 0.5
    assert settings.processor_spec == "tests.task.processors:slow"


def test_an_empty_version_id_means_the_current_version() -> None:
    assert Settings.from_environ({**REQUIRED, "S3_VERSION_ID": ""}).version_id is None


@pytest.mark.parametrize(("raw", "expected"), [("65536", 65536), ("512KiB", 512 * 1024)])
def test_part_size_accepts_bytes_or_a_binary_unit(raw: str, expected: int) -> None:
    settings = Settings.from_environ({**REQUIRED, "DOWNLOAD_PART_SIZE": raw})
    assert settings.part_size == expected


def test_missing_bucket_and_key_are_both_named_in_one_message() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ({})
    assert "S3_BUCKET is not set" in str(raised.value)
    assert "S3_KEY is not set" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "raw", "hint"),
    [
        ("DOWNLOAD_PART_SIZE", "1KiB", "from 64KiB to 1024MiB"),
        ("DOWNLOAD_PART_SIZE", "lots", "from 64KiB to 1024MiB"),
        ("DOWNLOAD_CONCURRENCY", "0", "from 1 to 64"),
        ("DOWNLOAD_CONCURRENCY", "many", "from 1 to 64"),
        ("PROGRESS_INTERVAL_SECONDS", "-1", "above 0"),
        ("TASK_PROCESSOR", "no-colon", "module:function"),
        ("TASK_PROCESSOR", ".relative:process", "module:function"),
        # Digits str.isdigit() accepts and int() does not, and a limit setitimer overflows on.
        ("DOWNLOAD_CONCURRENCY", "\u00b2", "from 1 to 64"),
        ("TASK_TIMEOUT_SECONDS", "\u00b2", "from 1 to 2592000"),
        ("TASK_TIMEOUT_SECONDS", "99999999999999999999", "from 1 to 2592000"),
    ],
)
def test_a_bad_value_is_rejected_with_what_is_allowed(name: str, raw: str, hint: str) -> None:
    with pytest.raises(SettingsError, match=hint) as raised:
        Settings.from_environ({**REQUIRED, name: raw})
    assert f"{name}={raw!r}" in str(raised.value)


def test_the_default_processor_is_loaded_from_its_spec() -> None:
    assert load_processor("task.processor:process") is process


@pytest.mark.parametrize(
    ("spec", "hint"),
    [("task.nowhere:process", "cannot be imported"), ("task.processor:absent", "no function")],
)
def test_a_processor_that_cannot_be_loaded_is_a_settings_error(spec: str, hint: str) -> None:
    with pytest.raises(SettingsError, match=hint):
        load_processor(spec)


@pytest.mark.parametrize(
    ("source", "shown"),
    [("def process(:\n", "SyntaxError"), ("raise RuntimeError('no config')\n", "no config")],
)
def test_a_processor_module_that_fails_on_import_is_a_settings_error_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, shown: str
) -> None:
    (tmp_path / "broken_processor.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SettingsError, match="failed while being imported") as raised:
        load_processor("broken_processor:process")
    assert shown in str(raised.value)


def test_a_result_key_longer_than_s3_allows_is_refused_before_any_reading() -> None:
    with pytest.raises(SettingsError, match="at most 1024") as raised:
        Settings.from_environ({**REQUIRED, "S3_KEY": "k" * 1015, "RESULT_PREFIX": "results/"})
    assert "shorten RESULT_PREFIX" in str(raised.value)
