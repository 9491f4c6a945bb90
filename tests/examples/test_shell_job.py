"""examples/shell-job run for real: its script and the AWS CLI, the way Fargate runs the image.

No Docker here, so the image's files run under the bubblewrap sandbox (tests/sandbox.py): the
script at the path its Dockerfile copies it to, read-only, as uid 1000, with /scratch the only
writable path and the dev stack's environment. The image has the AWS CLI v2; the tests use v1
from PyPI (requirements-dev.txt), which speaks the same `s3api get-object` and `put-object`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobctl.emulator import point_at_emulator
from task.exit_codes import ExitCode
from tests.dockerfile import REPO, Image
from tests.fakes.read_only_s3 import read_only_s3
from tests.fakes.stalling_s3 import Stall, stalling_s3
from tests.sandbox import TIMEOUT, Container, Run, Sandbox, files_copied
from tests.task.conftest import read_result, result_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

EXAMPLE = REPO / "examples" / "shell-job"
SCRIPT = EXAMPLE / "job.sh"
# Keys S3 takes that a shell script can easily get wrong: quotes, backslashes, control
# characters, spaces, UTF-8; and one the CLI would take for an option if passed as `--key KEY`.
AWKWARD_KEYS = ['uploads/"quoted" back\\slash\ttab\x01\x1f\r ü 2026.csv', "--uploads/a.csv"]


@pytest.fixture(scope="module")
def container(job_definition: Mapping[str, Any]) -> Container:
    image = Image.read(EXAMPLE / "Dockerfile")
    return Container(image, job_definition, files_copied(image, EXAMPLE))


@pytest.fixture
def sandbox(bubblewrap: None, container: Container, tmp_path: Path, emulator_url: str) -> Sandbox:
    return Sandbox(container, tmp_path, emulator_url)


def upload(s3: S3Client, bucket: str, key: str, lines: int = 20_000) -> bytes:
    data = b"".join(f"line {n}: {os.urandom(24).hex()}\n".encode() for n in range(lines))
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def failure_line(run: Run) -> str:
    """The one line a failed run wrote on stderr."""
    (line,) = run.stderr.splitlines()
    return line


def test_the_job_writes_size_sha256_and_lines_in_a_read_only_root_as_uid_1000(
    sandbox: Sandbox, s3: S3Client, bucket: str
) -> None:
    data = upload(s3, bucket, "uploads/report 2026.csv")
    run = sandbox.run(S3_BUCKET=bucket, S3_KEY="uploads/report 2026.csv")
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    result = read_result(s3, bucket, "uploads/report 2026.csv")
    assert {k: result[k] for k in ("bucket", "key", "versionId", "size", "sha256", "lines")} == {
        "bucket": bucket,
        "key": "uploads/report 2026.csv",
        "versionId": None,  # an unversioned bucket
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": 20_000,
    }
    assert result_keys(s3, bucket) == ["results/uploads/report 2026.csv.json"]
    assert run.stderr == ""
    assert run.stdout.splitlines()[-1].startswith(f"s3-job: wrote s3://{bucket}/results/")
    assert run.files_in("/scratch") == [], "its download is removed once the result is written"


def test_the_job_reads_the_version_the_runner_names_not_the_newest(
    sandbox: Sandbox, s3: S3Client, versioned_bucket: str
) -> None:
    first = upload(s3, versioned_bucket, "uploads/a.txt", lines=3)
    first_version = s3.list_object_versions(Bucket=versioned_bucket)["Versions"][0]["VersionId"]
    newest = upload(s3, versioned_bucket, "uploads/a.txt", lines=5)
    pinned = sandbox.run(
        S3_BUCKET=versioned_bucket, S3_KEY="uploads/a.txt", S3_VERSION_ID=first_version
    )
    assert pinned.returncode == ExitCode.OK, pinned.stdout + pinned.stderr
    result = read_result(s3, versioned_bucket, "uploads/a.txt")
    assert (result["sha256"], result["lines"]) == (hashlib.sha256(first).hexdigest(), 3)
    assert result["versionId"] == first_version
    # Without a version it reads the newest and says which version that was.
    newest_version = s3.head_object(Bucket=versioned_bucket, Key="uploads/a.txt")["VersionId"]
    latest = sandbox.run(S3_BUCKET=versioned_bucket, S3_KEY="uploads/a.txt")
    assert latest.returncode == ExitCode.OK, latest.stdout + latest.stderr
    result = read_result(s3, versioned_bucket, "uploads/a.txt")
    assert (result["sha256"], result["lines"]) == (hashlib.sha256(newest).hexdigest(), 5)
    assert result["versionId"] == newest_version != first_version


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=["quotes-and-control-characters", "dashes"])
def test_a_key_a_shell_could_mangle_reaches_the_result_intact(
    sandbox: Sandbox, s3: S3Client, bucket: str, key: str
) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"no newline at the end")
    run = sandbox.run(S3_BUCKET=bucket, S3_KEY=key)
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    result = read_result(s3, bucket, key)  # json.loads: the escaping is valid JSON
    assert result["key"] == key
    assert (result["size"], result["lines"]) == (21, 1)  # a last line without a newline counts


def test_a_missing_object_exits_3_with_one_line_on_stderr_and_no_result(
    sandbox: Sandbox, s3: S3Client, bucket: str
) -> None:
    run = sandbox.run(S3_BUCKET=bucket, S3_KEY="uploads/gone.csv")
    assert run.returncode == 3 == int(ExitCode.OBJECT_UNAVAILABLE)
    line = failure_line(run)
    assert line.startswith("s3-job: failed (exit 3, OBJECT_UNAVAILABLE):")
    assert f"s3://{bucket}/uploads/gone.csv" in line
    assert "NoSuchKey" in line
    assert "s3:GetObject" in line
    assert result_keys(s3, bucket) == []


def test_a_version_that_does_not_exist_exits_3(
    sandbox: Sandbox, s3: S3Client, versioned_bucket: str
) -> None:
    upload(s3, versioned_bucket, "uploads/a.txt", lines=1)
    run = sandbox.run(S3_BUCKET=versioned_bucket, S3_KEY="uploads/a.txt", S3_VERSION_ID="nope")
    assert run.returncode == ExitCode.OBJECT_UNAVAILABLE
    assert "(version nope)" in failure_line(run)
    assert result_keys(s3, versioned_bucket) == []


def test_a_missing_s3_key_exits_2_naming_the_variable_before_touching_s3(
    sandbox: Sandbox, bucket: str
) -> None:
    run = sandbox.run(S3_BUCKET=bucket)
    assert run.returncode == 2 == int(ExitCode.BAD_SETTINGS)
    line = failure_line(run)
    assert line.startswith("s3-job: failed (exit 2, BAD_SETTINGS): S3_KEY is not set")
    assert "S3_BUCKET" not in line.split("; check")[0]
    assert run.stdout == "", "it never started reading"


def test_every_bad_setting_is_named_at_once(sandbox: Sandbox) -> None:
    run = sandbox.run(TASK_TIMEOUT_SECONDS="010", RESULT_PREFIX="r" * 1100)
    assert run.returncode == ExitCode.BAD_SETTINGS
    line = failure_line(run)
    for named in ("S3_BUCKET is not set", "S3_KEY is not set", "shorten RESULT_PREFIX"):
        assert named in line
    assert "TASK_TIMEOUT_SECONDS='010' must be a whole number" in line


def test_s3_that_cannot_be_reached_exits_5_after_its_retries(
    container: Container, bubblewrap: None, tmp_path: Path
) -> None:
    with closed_port() as url:
        run = Sandbox(container, tmp_path, url).run(
            S3_BUCKET="any-bucket", S3_KEY="uploads/a.txt", AWS_MAX_ATTEMPTS="2"
        )
    assert run.returncode == 5 == int(ExitCode.DOWNLOAD_FAILED)
    line = failure_line(run)
    assert line.startswith("s3-job: failed (exit 5, DOWNLOAD_FAILED): reading s3://any-bucket/")
    assert "Could not connect to the endpoint URL" in line


def test_a_result_the_task_role_may_not_write_exits_7(
    container: Container, bubblewrap: None, tmp_path: Path
) -> None:
    with read_only_s3(b"one\ntwo\n") as url:
        run = Sandbox(container, tmp_path, url).run(
            S3_BUCKET="uploads-bucket", S3_KEY="uploads/a.txt", AWS_MAX_ATTEMPTS="1"
        )
    assert run.returncode == 7 == int(ExitCode.RESULT_NOT_WRITTEN)
    line = failure_line(run)
    assert line.startswith(
        "s3-job: failed (exit 7, RESULT_NOT_WRITTEN): writing "
        "s3://uploads-bucket/results/uploads/a.txt.json failed:"
    )
    assert "AccessDenied" in line
    assert run.files_in("/scratch") == []


def test_a_download_past_the_time_limit_exits_8_and_writes_nothing(
    container: Container, bubblewrap: None, tmp_path: Path
) -> None:
    with stalling_s3(Stall.HEADERS) as url:  # the GET never answers, so the limit always fires
        run = Sandbox(container, tmp_path, url).run(
            S3_BUCKET="stalled", S3_KEY="object", TASK_TIMEOUT_SECONDS="1"
        )
    assert run.returncode == 8 == int(ExitCode.TIMED_OUT)
    line = failure_line(run)
    assert "ran longer than its time limit (TASK_TIMEOUT_SECONDS=1)" in line
    assert "taskTimeoutMinutes" in line
    assert run.files_in("/scratch") == []


def test_sigterm_stops_a_download_that_hangs_with_143_and_leaves_nothing(tmp_path: Path) -> None:
    # Run directly, not in the sandbox, to signal the script itself as the container's init
    # process would. The download trickles on for good without ever timing out, so only the
    # script stopping the CLI on SIGTERM ends it: a shell that waits for it never exits.
    with stalling_s3(Stall.BODY, trickle=0.5) as url:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TMPDIR": str(tmp_path)}
        env.update(HOME=str(tmp_path), S3_BUCKET="stalled", S3_KEY="object")
        point_at_emulator(env, url)
        child = subprocess.Popen(
            [str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            await_path(tmp_path, "s3-job.*/object", child)  # the GET's body has started
            child.send_signal(signal.SIGTERM)
            stdout, stderr = child.communicate(timeout=TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 143 == int(ExitCode.STOPPED), stdout + stderr
    (line,) = stderr.splitlines()
    assert line.startswith("s3-job: failed (exit 143, STOPPED): SIGTERM received while processing")
    assert list(tmp_path.iterdir()) == [], "its download is removed"


def await_path(folder: Path, pattern: str, child: subprocess.Popen[str]) -> None:
    """Wait (up to TIMEOUT) for a file to appear, while the child still runs."""
    deadline = time.monotonic() + TIMEOUT
    while not any(folder.glob(pattern)):
        if child.poll() is not None:
            pytest.fail(f"the job ended first (exit {child.returncode}): {child.stderr!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern} in {folder} after {TIMEOUT} s")
        time.sleep(0.05)


@contextmanager
def closed_port() -> Iterator[str]:
    """A loopback URL that refuses connections: its port is bound, never listened on."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"


def json_string_in_the_script() -> str:
    """The script's JSON escaping (the table it builds and the function), to run on its own."""
    text = SCRIPT.read_text()
    start = text.index('CONTROL_TO_JSON=""')
    end = text.index("\n}\n", text.index("json_string() {")) + len("\n}\n")
    return text[start:end]


SHELLS = ["sh", "bash"]  # the host's sh is dash; the image's (Amazon Linux) is bash


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"))))
def test_any_text_becomes_a_json_string_that_reads_back_the_same(
    shell: str, texts: list[str]
) -> None:
    program = json_string_in_the_script() + 'for text in "$@"; do json_string "$text"; echo; done'
    done = subprocess.run(
        [shell, "-c", program, shell, *texts],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    # One line each; split on "\n" only, as str.splitlines also splits at U+0085, U+2028, ...
    lines = done.stdout.decode().split("\n")[:-1]
    assert [json.loads(line) for line in lines] == texts


def test_newlines_and_a_trailing_newline_survive_the_escaping() -> None:
    # S3 keys may hold newlines; the emulator cannot store one, so this part is checked alone.
    texts = ["a\nb", "ends with a newline\n", "\n\n", ""]
    program = json_string_in_the_script() + 'for text in "$@"; do json_string "$text"; echo; done'
    done = subprocess.run(
        ["sh", "-c", program, "sh", *texts], capture_output=True, timeout=TIMEOUT, check=True
    )
    assert done.stdout.decode().split("\n")[:-1] == [json.dumps(t) for t in texts]
