"""The runner's Lambda package: its modules, and bytecode Lambda's Python uses as it is.

/var/task is read-only on Lambda, so what is not in the package is compiled at every cold start.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import runner_package
from infra.runner import RUNTIME
from infra.runner_package import package_files, runtime_interpreter
from jobctl.evaluate import Evaluation
from tests.infra.conftest import TASKRUNNER_DIR

THIS_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
CACHE_TAG = sys.implementation.cache_tag
MODULES = sorted(path.name for path in TASKRUNNER_DIR.glob("*.py"))
# dispatch imports every module but handler, whose import reads the runner's settings.
IMPORT_ALL = "import dispatch; print('imported')"
CACHES = shutil.ignore_patterns("__pycache__")


def lay_out(files: dict[str, Path], folder: Path) -> Path:
    """The package as Lambda unpacks it into /var/task."""
    for name, path in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    return folder


def test_every_module_is_packaged_with_bytecode_for_the_runtimes_python() -> None:
    files, without_bytecode = package_files(TASKRUNNER_DIR, THIS_RUNTIME)
    assert without_bytecode is None
    assert sorted(name for name in files if "/" not in name) == MODULES
    assert sorted(name for name in files if "/" in name) == sorted(
        f"__pycache__/{module[:-3]}.{CACHE_TAG}.pyc" for module in MODULES
    )


def test_lambda_imports_the_bytecode_without_compiling_the_sources(tmp_path: Path) -> None:
    # Unchecked hash-based bytecode (PEP 552) is used as it is: sources that no longer compile
    # prove that nothing was compiled from them.
    files, _ = package_files(TASKRUNNER_DIR, THIS_RUNTIME)
    task_root = lay_out(files, tmp_path / "task")
    for module in MODULES:
        (task_root / module).write_text("raise ImportError('compiled from its source')\n")
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=task_root,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(task_root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "imported"


def test_tracebacks_name_the_modules_where_lambda_unpacks_them() -> None:
    files, _ = package_files(TASKRUNNER_DIR, THIS_RUNTIME)
    pyc = files[f"__pycache__/job_record.{CACHE_TAG}.pyc"].read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, not checked against source
    assert marshal.loads(pyc[16:]).co_filename == "/var/task/job_record.py"


def test_the_bytecode_is_the_same_bytes_from_any_copy_of_the_sources(tmp_path: Path) -> None:
    # Same bytes, same archive: `pulumi preview` shows no change to a function nobody changed.
    copy = shutil.copytree(TASKRUNNER_DIR, tmp_path / "elsewhere", ignore=CACHES)
    first, _ = package_files(TASKRUNNER_DIR, THIS_RUNTIME)
    first_bytes = {name: path.read_bytes() for name, path in first.items()}
    second, _ = package_files(copy, THIS_RUNTIME)  # compiled again, from another folder
    assert {name: path.read_bytes() for name, path in second.items()} == first_bytes


def test_the_runtimes_python_is_found_on_path_when_the_program_runs_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    major, minor = sys.version_info.major, sys.version_info.minor
    (tmp_path / f"python{major}.{minor}").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = runtime_interpreter(THIS_RUNTIME, this_python="/nowhere/python", this_version=(2, 7))
    assert found == str(tmp_path / f"python{major}.{minor}")


def test_a_python_on_path_that_is_another_version_is_not_taken_for_the_runtimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A version manager's shim (pyenv's python3.13 without 3.13 selected) fails or answers for
    # another version: no bytecode is better than bytecode Lambda's Python would ignore.
    (tmp_path / "python3.99").symlink_to(sys.executable)
    failing = tmp_path / "python3.98"
    failing.write_text("#!/bin/sh\necho 'pyenv: python3.98: command not found' >&2\nexit 127\n")
    failing.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runtime_interpreter("python3.99") is None
    assert runtime_interpreter("python3.98") is None


def test_without_the_runtimes_python_the_package_holds_the_sources_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    files, without_bytecode = package_files(TASKRUNNER_DIR, "python3.99")
    assert sorted(files) == MODULES
    assert without_bytecode is not None
    assert "python3.99" in without_bytecode
    assert "compiles them at every cold start" in without_bytecode


def test_a_module_the_runtimes_python_cannot_compile_stops_the_deploy_naming_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken.py").write_text("def handler(:\n")
    with pytest.raises(RuntimeError, match=r"broken\.py"):
        package_files(tmp_path, THIS_RUNTIME)


def test_the_function_deploys_every_module_and_only_bytecode_for_them(dev: Evaluation) -> None:
    code = dev.one("aws:lambda/function:Function").inputs["code"]
    names = sorted(code.assets)
    assert sorted(name for name in names if "/" not in name) == MODULES
    tag = "cpython-" + "".join(map(str, runner_package.runtime_version(RUNTIME)))
    assert {name for name in names if "/" in name} <= {
        f"__pycache__/{module[:-3]}.{tag}.pyc" for module in MODULES
    }
