"""`python -m task` run the way Fargate runs the image, without Docker: under bubblewrap.

The sandbox (tests/sandbox.py) holds the system, Python and the code under /app, read-only; the
dev stack's user, environment and scratch volume; the image's command. If the job (or a
processor) writes anywhere but /scratch, or needs a writable root, it fails here as it would on
Fargate.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from task.exit_codes import ExitCode
from tests.dockerfile import REPO, Image
from tests.sandbox import IMAGE_HOME, Container, Sandbox, sandbox_command
from tests.task.conftest import log_lines, read_result, result_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="module")
def container(job_definition: Mapping[str, Any]) -> Container:
    # The image's code: the task package (COPY . /app/task) and the tests' processors beside it.
    files = {"/app/task": REPO / "task", "/app/tests": REPO / "tests"}
    return Container(Image.read(), job_definition, files)


@pytest.fixture
def sandbox(bubblewrap: None, container: Container, tmp_path: Path, emulator_url: str) -> Sandbox:
    return Sandbox(container, tmp_path, emulator_url)


def upload(s3: S3Client, bucket: str, key: str) -> bytes:
    data = b"".join(f"line {n}: {os.urandom(24).hex()}\n".encode() for n in range(20_000))
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def test_the_default_processor_runs_end_to_end_in_a_read_only_root_as_uid_1000(
    sandbox: Sandbox, s3: S3Client, bucket: str
) -> None:
    data = upload(s3, bucket, "uploads/report 2026.csv")
    run = sandbox.run(S3_BUCKET=bucket, S3_KEY="uploads/report 2026.csv")
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    result = read_result(s3, bucket, "uploads/report 2026.csv")
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["lines"] == 20_000
    assert run.files_in("/scratch") == [], "the default processor needs no scratch space"
    assert [line["event"] for line in log_lines(run.stdout)] == ["start", "finish"]


def test_a_processor_writing_temporary_files_gets_them_on_the_scratch_volume_only(
    sandbox: Sandbox, s3: S3Client, bucket: str
) -> None:
    data = upload(s3, bucket, "uploads/big.csv")
    run = sandbox.run(
        S3_BUCKET=bucket,
        S3_KEY="uploads/big.csv",
        TASK_PROCESSOR="tests.task.processors:spool_to_tempfile",
    )
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    result = read_result(s3, bucket, "uploads/big.csv")
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert (result["uid"], result["gid"]) == (1000, 1000)
    assert result["tempDir"] == "/scratch"
    spool = Path(result["spool"])
    assert spool.parent == Path("/scratch")
    # The one file the job wrote is on the volume, whole; nothing else was writable.
    assert run.files_in("/scratch") == [spool.name]
    assert (run.volumes["/scratch"] / spool.name).read_bytes() == data


@pytest.mark.parametrize(
    "elsewhere",
    ["/tmp", "~/.cache", "/app/task", "/"],
    ids=["tmp", "home", "the-code", "root"],
)
def test_writing_anywhere_but_scratch_fails_the_job_and_writes_nothing(
    sandbox: Sandbox, s3: S3Client, bucket: str, elsewhere: str
) -> None:
    s3.put_object(Bucket=bucket, Key="uploads/x.txt", Body=b"x\n")
    run = sandbox.run(
        S3_BUCKET=bucket,
        S3_KEY="uploads/x.txt",
        TASK_PROCESSOR="tests.task.processors:write_outside",
        WRITE_OUTSIDE=elsewhere,
    )
    assert run.returncode == ExitCode.PROCESSING_FAILED, run.stdout + run.stderr
    failure = log_lines(run.stdout)[-1]
    assert failure["reason"] == "PROCESSING_FAILED"
    assert "Read-only file system" in failure["error"]
    assert result_keys(s3, bucket) == []
    assert run.files_in("/scratch") == []
    assert not (REPO / "task" / "leaked").exists()


def test_the_sandbox_mirrors_the_task_definition(container: Container) -> None:
    command = sandbox_command(container, {"/scratch": Path("/nowhere")}, {"A": "1"})
    assert command[command.index("--uid") + 1] == "1000"
    assert command[command.index("--gid") + 1] == "1000"
    bind = command.index("/nowhere") - 1
    assert command[bind : bind + 3] == ["--bind", "/nowhere", "/scratch"]
    # The root is made read-only after every mount, so nothing bound before stays writable.
    assert command.index("--remount-ro") > command.index("/scratch")
    assert command[-4:] == ["--", "python", "-m", "task"]
    env = container.environment({"S3_KEY": "k"})
    assert env["TMPDIR"] == "/scratch"
    assert env["HOME"] == IMAGE_HOME
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["RESULT_PREFIX"] == "results/"
