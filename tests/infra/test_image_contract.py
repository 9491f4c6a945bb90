"""Each job image and the task definition agree on what Fargate relies on: volumes, user, command.

Fargate gives a bind volume the image's directory (owner and mode included) only when the image
declares that path as a VOLUME; otherwise the volume is root's, mode 0755, and a non-root job
cannot write to it (ECS developer guide, "Use bind mounts"). The checks hold for the default
image (task/) and for every example under examples/, which a stack can select instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobctl.evaluate import Evaluation
from tests.dockerfile import DOCKERFILE, JOB_DOCKERFILES, REPO, Image, exec_form, parse
from tests.infra.conftest import as_json

every_job_image = pytest.mark.parametrize(
    "dockerfile", JOB_DOCKERFILES, ids=[str(p.parent.relative_to(REPO)) for p in JOB_DOCKERFILES]
)


def job_container(stack: Evaluation) -> dict[str, Any]:
    (container,) = as_json(
        stack.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    found: dict[str, Any] = container
    return found


def contract_problems(image: Image, container: dict[str, Any]) -> list[str]:
    """Each way the image breaks what the container definition assumes of it."""
    problems = [
        f"mount point {mount['containerPath']} is not a VOLUME in the image, so Fargate "
        "creates it owned by root with mode 0755"
        for mount in container.get("mountPoints", [])
        if mount["containerPath"] not in image.volumes
    ]
    if image.user != container.get("user"):
        problems.append(
            f"the image's final USER is {image.user!r} but the task runs as "
            f"{container.get('user')!r}: the volume's owner would not be the job's user"
        )
    if image.command is None or exec_form(image.command) is None:
        problems.append(
            f"CMD {image.command!r} is not exec form: a shell would be PID 1's child and "
            "SIGTERM would not reach the job"
        )
    if image.entrypoint is not None and exec_form(image.entrypoint, allow_empty=True) is None:
        problems.append(
            f"ENTRYPOINT {image.entrypoint!r} is not exec form: a shell would run it, and "
            "SIGTERM would not reach the job"
        )
    return problems


@every_job_image
def test_the_image_keeps_every_promise_the_task_definition_relies_on(
    stack: Evaluation, dockerfile: Path
) -> None:
    assert contract_problems(Image.read(dockerfile), job_container(stack)) == []


@every_job_image
def test_every_mount_point_is_a_volume_the_image_declares(
    stack: Evaluation, dockerfile: Path
) -> None:
    container = job_container(stack)
    assert container["mountPoints"], "the job needs its scratch volume"
    assert {m["containerPath"] for m in container["mountPoints"]} <= Image.read(dockerfile).volumes


@every_job_image
def test_the_image_runs_as_the_user_the_task_definition_names(
    stack: Evaluation, dockerfile: Path
) -> None:
    assert Image.read(dockerfile).user == job_container(stack)["user"] == "1000:1000"


def test_the_shell_example_is_among_the_images_checked() -> None:
    assert REPO / "examples" / "shell-job" / "Dockerfile" in JOB_DOCKERFILES


def test_the_image_command_is_exec_form() -> None:
    assert exec_form(Image.read().command or "") == ["python", "-m", "task"]


def without_volume(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("VOLUME"))


def test_an_image_without_the_volume_is_reported_as_fargate_would_break_it(dev: Evaluation) -> None:
    image = Image(tuple(parse(without_volume(DOCKERFILE.read_text()))))
    (problem,) = contract_problems(image, job_container(dev))
    assert "/scratch is not a VOLUME" in problem


def test_a_different_user_or_a_shell_form_command_is_reported(dev: Evaluation) -> None:
    text = DOCKERFILE.read_text().replace("USER 1000:1000", "USER 1001")
    text = text.replace('CMD ["python", "-m", "task"]', "CMD python -m task")
    problems = contract_problems(Image(tuple(parse(text))), job_container(dev))
    assert len(problems) == 2
    assert "final USER is '1001'" in problems[0]
    assert "not exec form" in problems[1]


def test_a_shell_form_entrypoint_is_reported_and_an_empty_one_clears_the_base_images(
    dev: Evaluation,
) -> None:
    shell_form = Image(tuple(parse(DOCKERFILE.read_text() + "ENTRYPOINT /bin/sh -c job\n")))
    (problem,) = contract_problems(shell_form, job_container(dev))
    assert "ENTRYPOINT '/bin/sh -c job' is not exec form" in problem
    cleared = Image(tuple(parse(DOCKERFILE.read_text() + "ENTRYPOINT []\n")))
    assert contract_problems(cleared, job_container(dev)) == []
    assert cleared.argv == ["python", "-m", "task"]


def test_the_reader_joins_continued_lines_and_reads_both_volume_forms() -> None:
    image = Image(
        tuple(
            parse(
                "FROM x\nENV A=1 \\\n    # a comment inside\n    B='two words'\n"
                'VOLUME ["/a", "/b"]\nVOLUME /c /d\nUSER 1\nUSER 2\n'
            )
        )
    )
    assert image.environment == {"A": "1", "B": "two words"}
    assert image.volumes == {"/a", "/b", "/c", "/d"}
    assert image.user == "2"


def test_the_reader_runs_entrypoint_then_command_and_reads_what_copy_puts_where() -> None:
    image = Image(
        tuple(
            parse(
                "FROM x\nCOPY --from=build /out /app/\nCOPY --chmod=0555 job.sh /app/job.sh\n"
                'COPY a b /app/\nCOPY ["c d", "/e"]\n'
                'ENTRYPOINT ["tini", "--"]\nCMD ["/app/job.sh"]\n'
            )
        )
    )
    assert image.argv == ["tini", "--", "/app/job.sh"]
    assert image.copies == [(["job.sh"], "/app/job.sh"), (["a", "b"], "/app/"), (["c d"], "/e")]
