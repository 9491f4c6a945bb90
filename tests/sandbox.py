"""A job's container run the way Fargate runs it, without Docker: under bubblewrap.

The sandbox is built from what the image and the task definition declare: a read-only root
filesystem holding only the system (the host's, standing in for the image's base layers), this
virtualenv's Python and the image's own files; the user and group of the container definition;
each mount point as the only writable paths; the image's environment, then the task definition's,
then the runner's overrides; the image's command in its working directory. The job reaches the
local S3 emulator over the shared loopback.

If a job writes anywhere but its volumes, or needs a writable root, it fails here as it would on
Fargate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobctl.emulator import point_at_emulator
from tests.dockerfile import Image

TIMEOUT = 120  # seconds; a hung sandbox fails the test instead of the suite
# Where Docker points HOME for the image's user when the image sets none; the task image's
# `useradd --no-create-home` leaves it absent.
IMAGE_HOME = "/home/task"
# The system parts of the host that stand in for the image's base layers.
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


def require_bubblewrap() -> None:
    """Skips (or, under CI, fails) the calling test when the sandbox cannot run."""
    problem = bubblewrap_problem()
    if problem is not None:
        message = f"the container-contract tests did not run: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must run them)")
        pytest.skip(message)


def files_copied(image: Image, context: Path) -> dict[str, Path]:
    """What the image's COPY instructions put where: container path -> file in the context."""
    files: dict[str, Path] = {}
    for sources, destination in image.copies:
        for source in sources:
            target = destination
            if destination.endswith("/") or len(sources) > 1:  # into that folder
                target = f"{destination.rstrip('/')}/{Path(source).name}"
            files[target] = context / source
    return files


@dataclass(frozen=True)
class Container:
    """A job's container: its image, its container definition and the image's own files."""

    image: Image
    definition: Mapping[str, Any]
    files: Mapping[str, Path]  # what the image adds to its base: container path -> host path

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
        # The image's Python is this virtualenv's, and so is the AWS CLI the shell example runs.
        venv_bin = str(Path(sys.executable).parent)
        env = {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": IMAGE_HOME}
        env.update(self.image.environment)
        env.update({e["name"]: e["value"] for e in self.definition.get("environment", [])})
        env.update(overrides)
        return env


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
    command = container.image.argv
    assert command is not None, "Fargate runs the command without a shell only in exec form"
    args = ["bwrap", "--unshare-user", "--uid", uid, "--gid", gid]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    args += ["--new-session", "--clearenv", *_system_binds()]
    for container_path, host_path in container.files.items():
        args += ["--ro-bind", str(host_path), container_path]
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
