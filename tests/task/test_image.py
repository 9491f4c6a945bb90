"""The Dockerfile keeps the contract the task definition relies on (hadolint checks the rest)."""

from __future__ import annotations

import json
import re
from pathlib import Path

TASK_DIR = Path(__file__).resolve().parents[2] / "task"
DOCKERFILE = (TASK_DIR / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_the_image_starts_from_a_pinned_python_3_13_slim_base() -> None:
    [base] = instructions("FROM")
    assert re.fullmatch(r"python:3\.13(\.\d+)?-slim-\w+(@sha256:[0-9a-f]{64})?", base)


def test_the_image_runs_python_dash_m_task_in_exec_form_as_uid_1000() -> None:
    [command] = instructions("CMD")
    assert json.loads(command) == ["python", "-m", "task"]
    assert instructions("USER") == ["1000:1000"]
    assert instructions("WORKDIR") == ["/app"]
    assert "useradd --system --uid 1000" in DOCKERFILE


def test_temporary_files_go_to_the_scratch_volume_and_no_bytecode_is_written() -> None:
    assert "TMPDIR=/scratch" in DOCKERFILE
    assert "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE


def test_every_runtime_dependency_is_pinned_exactly_and_boto3_is_among_them() -> None:
    lines = (TASK_DIR / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", line) for line in requirements)
    assert any(line.startswith("boto3==") for line in requirements)


def test_the_image_build_cuts_the_slim_botocore_data_after_the_code_is_in_place() -> None:
    # Without it every task starts ~0.07 CPU-s slower (task/botocore_data.py): the job falls
    # back to botocore's full data and loads the whole CA bundle, silently.
    copy_code = DOCKERFILE.index("COPY . /app/task")
    assert DOCKERFILE.index("python -m task.botocore_data") > copy_code
    assert DOCKERFILE.index("python -m task.botocore_data") < DOCKERFILE.index("USER 1000:1000")
