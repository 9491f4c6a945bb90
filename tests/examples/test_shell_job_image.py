"""examples/shell-job's Dockerfile: what a job image must declare, checked without Docker.

What every job image owes the task definition (the scratch VOLUME, USER 1000:1000, exec-form
commands) is checked for this one too, in tests/infra/test_image_contract.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobctl.evaluate import evaluate
from tests.dockerfile import REPO, Image
from tests.sandbox import TIMEOUT, files_copied

EXAMPLE = REPO / "examples" / "shell-job"
DOCKERFILE = EXAMPLE / "Dockerfile"


def test_the_base_is_a_pinned_aws_cli_tag_with_a_note_to_pin_its_digest() -> None:
    (base,) = Image.read(DOCKERFILE).all("FROM")
    assert re.fullmatch(r"amazon/aws-cli:2\.\d+\.\d+(@sha256:[0-9a-f]{64})?", base)
    assert "pin by digest too" in DOCKERFILE.read_text()


def test_the_base_images_aws_entrypoint_is_cleared_so_the_copied_script_runs() -> None:
    image = Image.read(DOCKERFILE)
    assert image.entrypoint == "[]"
    assert image.argv == ["/app/job.sh"]
    assert files_copied(image, EXAMPLE) == {"/app/job.sh": EXAMPLE / "job.sh"}
    assert "COPY --chmod=0555 job.sh" in DOCKERFILE.read_text(), "root's, read-only, executable"
    assert os.access(EXAMPLE / "job.sh", os.X_OK), "and executable in git too"


def test_home_and_temporary_files_are_on_the_scratch_volume_the_image_gives_uid_1000() -> None:
    image = Image.read(DOCKERFILE)
    assert image.environment["HOME"] == image.environment["TMPDIR"] == "/scratch"
    assert image.environment["AWS_PAGER"] == ""
    assert "install -d -o 1000 -g 1000 -m 0700 /scratch" in image.all("RUN")
    assert image.volumes == {"/scratch"}
    assert image.user == "1000:1000"


def test_hadolint_and_shellcheck_find_nothing_in_the_example() -> None:
    tools = Path(sys.executable).parent  # both come with requirements-dev.txt
    for command in (
        [str(tools / "hadolint"), str(DOCKERFILE)],
        [str(tools / "shellcheck"), str(EXAMPLE / "job.sh")],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_readmes_config_value_builds_the_example_for_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)  # `pulumi up` runs in the project folder; the value is relative to it
    stack = evaluate("dev", {"taskImageContext": "examples/shell-job"})
    build = stack.one("docker:index/image:Image").inputs["build"]
    assert Path(build["context"]).resolve() == EXAMPLE
    assert Path(build["dockerfile"]).resolve() == DOCKERFILE
