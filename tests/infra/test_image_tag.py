"""The image tag changes whenever the Docker provider would rebuild and push.

The repository's tags are immutable: pushing a rebuilt image under a tag it already holds fails
the deployment. pulumi-docker v4 rebuilds when its hash of the build context changes (the
Dockerfile and every file .dockerignore leaves in, by path, mode and content).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.image import IGNORED_PARTS, IGNORED_SUFFIXES, content_tag
from jobctl.evaluate import PROJECT_DIR


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pkg" / "main.py").write_text("print('hi')\n")
    return tmp_path


def test_the_tag_changes_with_content_name_mode_and_platform(context: Path) -> None:
    before = content_tag(context, "linux/amd64")
    assert content_tag(context, "linux/amd64") == before
    assert content_tag(context, "linux/arm64") != before

    main = context / "pkg" / "main.py"
    main.write_text("print('bye')\n")
    changed = content_tag(context, "linux/amd64")
    assert changed != before

    main.chmod(0o755)  # Docker's context hash includes the mode
    assert content_tag(context, "linux/amd64") != changed

    main.rename(context / "pkg" / "other.py")
    assert len({before, changed, content_tag(context, "linux/amd64")}) == 3


def test_caches_and_bytecode_do_not_change_the_tag(context: Path) -> None:
    before = content_tag(context, "linux/amd64")
    for part in IGNORED_PARTS:
        (context / "pkg" / part).mkdir()
        (context / "pkg" / part / "entry").write_text("noise")
    for suffix in IGNORED_SUFFIXES:
        (context / "pkg" / f"main{suffix}").write_bytes(b"\x00")
    assert content_tag(context, "linux/amd64") == before


def test_everything_the_tag_skips_is_kept_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (PROJECT_DIR / "task" / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for part in IGNORED_PARTS:
        assert f"**/{part}" in ignored, part
    for suffix in IGNORED_SUFFIXES:
        assert f"**/*{suffix}" in ignored, suffix
