"""`python -m task` run the way Fargate runs the image, without Docker: under bubblewrap.

The sandbox is built from what the image and the task definition declare: a read-only root
filesystem holding only the system, Python and the code under /app; the user and group of the
container definition; each mount point as the only writable paths; the image's environment,
then the task definition's, then the runner's overrides; no home directory; the image's command
in its working directory. The job reaches the local S3 emulator over the shared loopback.

If the job (or a processor) writes anywhere but /scratch, or needs a writable root, it fails
here as it would on Fargate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from jobctl.emulator import point_at_emulator
from jobctl.evaluate import evaluate
from task.exit_codes import ExitCode
from tests.dockerfile import Image, exec_form
from tests.task.conftest import log_lines, read_result, result_keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds; a hung sandbox fails the test instead of the suite
# Where Docker points HOME for the image's user; `useradd --no-create-home` leaves it absent.
IMAGE_HOME = "/home/task"
# The system parts of the host that stand in for the image's base layers (Debian, like it).
SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib64")
INSTALL_HINT = "install it with `apt-get install -y bubblewrap` (.ci/run does)"


def bubblewrap_problem() -> str | None:
    """Why the sandbox cannot run on this machine, or None if it can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}"
    namespaces = ["--unshare-user", "--uid", "1000", "--gid", "1000"]
    probe = subprocess.run(
        [bwrap, *namespaces, "--ro-bind", "/", "/", "--", "true"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        return f"bwrap cannot create a user namespace here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def bubblewrap() -> None:
    """Skips (or, under CI, fails) the tests that need the sandbox when it cannot run."""
    problem = bubblewrap_problem()
    if problem is not None:
        message = f"the container-contract test did not run: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run it)")
        pytest.skip(message)


@dataclass(frozen=True)
class Container:
    """The job's container as the dev stack declares it, and the image it runs."""

    image: Image
    definition: Mapping[str, Any]

    @property
    def uid_gid(self) -> tuple[str, str]:
        uid, _, gid = str(self.definition["user"]).partition(":")
        return uid, gid or uid

    @property
    def writable_paths(self) -> list[str]:
        return [
            m["containerPath"]
            for m in self.definition.get("mountPoints", [])
            if not m.get("readOnly", False)
        ]

    def environment(self, overrides: Mapping[str, str]) -> dict[str, str]:
        """Image ENV, then the task definition's environment, then the runner's overrides."""
        python_bin = str(Path(sys.executable).parent)  # the image's Python is this venv's
        env = {"PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": IMAGE_HOME}
        env.update(self.image.environment)
        env.update({e["name"]: e["value"] for e in self.definition.get("environment", [])})
        env.update(overrides)
        return env


@pytest.fixture(scope="module")
def container() -> Container:
    (definition,) = json.loads(
        evaluate("dev").one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    return Container(Image.read(), definition)


def _system_binds() -> Iterator[str]:
    for name in SYSTEM_DIRS:
        path = Path("/", name)
        if path.is_symlink():
            yield from ("--symlink", os.readlink(path), str(path))
        elif path.is_dir():
            yield from ("--ro-bind", str(path), str(path))
    # The interpreter and the virtualenv holding the image's dependencies, at the same paths.
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for prefix in sorted(prefixes):
        yield from ("--ro-bind", prefix, prefix)


def sandbox_command(
    container: Container, volumes: Mapping[str, Path], env: Mapping[str, str]
) -> list[str]:
    """bwrap arguments that run the image's command as Fargate would run this container."""
    assert container.definition["readonlyRootFilesystem"] is True, "the sandbox assumes it"
    uid, gid = container.uid_gid
    command = exec_form(container.image.command or "")
    assert command is not None, "Fargate runs CMD without a shell only in exec form"
    args = ["bwrap", "--unshare-user", "--uid", uid, "--gid", gid]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    args += ["--new-session", "--clearenv", *_system_binds()]
    # The image's code: the task package (COPY . /app/task) and the tests' processors beside it.
    args += ["--ro-bind", str(REPO / "task"), "/app/task"]
    args += ["--ro-bind", str(REPO / "tests"), "/app/tests"]
    args += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--dir", "/tmp"]
    for container_path, host_dir in volumes.items():
        args += ["--bind", str(host_dir), container_path]
    # Everything above is now read-only, the tmpfs root included; only the volumes stay writable.
    args += ["--remount-ro", "/", "--chdir", container.image.workdir or "/"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return [*args, "--", *command]


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    volumes: Mapping[str, Path]

    def files_in(self, container_path: str) -> list[str]:
        root = self.volumes[container_path]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class Sandbox:
    """Runs the job's container, once per call, each with fresh volumes."""

    def __init__(self, container: Container, tmp_path: Path, emulator_url: str) -> None:
        self.container = container
        self.tmp_path = tmp_path
        self.emulator_url = emulator_url
        self.runs = 0

    def run(self, **overrides: str) -> Run:
        """The container with the runner's overrides (S3_BUCKET, S3_KEY, ...) added."""
        self.runs += 1
        return run_in_sandbox(
            self.container, self.tmp_path / f"run-{self.runs}", self.emulator_url, **overrides
        )


@pytest.fixture
def sandbox(bubblewrap: None, container: Container, tmp_path: Path, emulator_url: str) -> Sandbox:
    return Sandbox(container, tmp_path, emulator_url)


def run_in_sandbox(
    container: Container, tmp_path: Path, emulator_url: str, **overrides: str
) -> Run:
    volumes: dict[str, Path] = {}
    for index, container_path in enumerate(container.writable_paths):
        host_dir = tmp_path / f"volume-{index}"
        host_dir.mkdir(mode=0o700, parents=True)
        volumes[container_path] = host_dir
    env = container.environment(overrides)
    # Stands in for the task role's credentials and the regional endpoint: the local emulator.
    point_at_emulator(env, emulator_url)
    done = subprocess.run(
        sandbox_command(container, volumes, env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, volumes)


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
