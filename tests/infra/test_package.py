"""The package this repository builds: `s3_fargate_jobs`, used by a program that installed it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobctl.evaluate import PROJECT_DIR

USER_PROGRAM = Path(__file__).parent / "user_program"
# What pyproject.toml builds the package from.
PACKAGE_FILES = ("pyproject.toml", "README.md")
PACKAGE_DIRS = ("infra", "taskrunner", "task")
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc")

# Evaluates the user's program in a fresh interpreter where the component comes only from the
# unpacked wheel: the repository's `infra` is not what the program imports.
EVALUATE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from jobctl.evaluate import evaluate_program
evaluation = evaluate_program(Path(sys.argv[2]), "media-platform", "staging", {})
import s3_fargate_jobs
image = evaluation.one("docker:index/image:Image").inputs["build"]
code = evaluation.one("aws:lambda/function:Function").inputs
print(json.dumps({
    "package": s3_fargate_jobs.__file__,
    "loaded_infra": "infra" in sys.modules,
    "types": sorted({r.type for r in evaluation}),
    "outputs": evaluation.outputs,
    "context": str((Path(sys.argv[2]) / image["context"]).resolve()),
    "handler": code["handler"],
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this repository as pip builds it, unpacked as pip installs it.

    Built from a copy of what the package is made of: setuptools writes build/ and egg-info in
    the tree it builds, and two pytest workers each setting this up must not share those.
    """
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_FILES:
        shutil.copy2(PROJECT_DIR / name, source / name)
    for name in PACKAGE_DIRS:
        shutil.copytree(PROJECT_DIR / name, source / name, ignore=CACHES)
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(wheels), str(source),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("s3_fargate_jobs-*.whl")
    site = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_carries_the_component_the_runner_and_the_jobs_build_context(
    installed: Path,
) -> None:
    package = installed / "s3_fargate_jobs"
    assert (package / "component.py").is_file()
    assert (package / "taskrunner" / "handler.py").is_file()
    for name in ("Dockerfile", "requirements.txt", "__main__.py", "frame.py"):
        assert (package / "task" / name).is_file(), name
    assert not list(package.rglob("test_*.py"))


def test_a_program_that_installed_the_package_gets_the_whole_system(installed: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EVALUATE, str(installed), str(USER_PROGRAM)],
        cwd=PROJECT_DIR,
        env={**os.environ, "COMPONENT_PACKAGE": "s3_fargate_jobs"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert Path(found["package"]).is_relative_to(installed)
    assert found["loaded_infra"] is False
    assert "s3fargatejobs:index:S3FargateJobs" in found["types"]
    assert "aws:s3/bucket:Bucket" not in found["types"]
    assert found["outputs"]["bucket"] == "team-media"
    # The job's image is built from the build context inside the installed package.
    assert Path(found["context"]) == installed / "s3_fargate_jobs" / "task"
    assert found["handler"] == "handler.handler"
