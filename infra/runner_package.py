"""The runner's Lambda package: its modules, and their bytecode for the runtime's Python.

Lambda unpacks the package into /var/task, which is read-only: Python cannot keep what it
compiles there, so without bytecode in the package every cold start compiles the runner's
modules again. That made the runner's import 45-120 ms slower on a 2-core Xeon, +22 to +61 % on
a bare `import boto3; boto3.client("ecs")` against +2 to +7 % with the bytecode
(bench/bench_taskrunner.py), and a 256 MB function has about a seventh of a vCPU. So the
package carries each module's bytecode, compiled by the runtime's own Python version (bytecode
is per minor version): the Python running this program when it is that version, else
`pythonX.Y` on PATH. Without either, the package holds the sources alone
(Lambda then compiles them at each cold start) and the program says so.

The bytecode is hash-based and unchecked (PEP 552): Python uses it without comparing it with
the source's timestamp, which a zip does not keep reliably. Both are made from the same files
at every `pulumi up`, so they cannot disagree. It is compiled with the file names Lambda shows
in tracebacks (/var/task/...), not where this program found them, so the same Python makes
the same bytes from any copy of the sources and `pulumi preview` stays quiet when nothing
changed.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Run by the runtime's Python: compile each source (argv[2:]) into argv[1], named as its
# __pycache__ entry, and print the names.
COMPILE_SCRIPT = """
import os, py_compile, sys
out = sys.argv[1]
for source in sys.argv[2:]:
    module = os.path.basename(source)[:-3]
    name = f"{module}.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(
        source,
        cfile=os.path.join(out, name),
        dfile="/var/task/" + module + ".py",
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    print(name)
"""
COMPILE_TIMEOUT_SECONDS = 60


def runtime_version(runtime: str) -> tuple[int, int]:
    """(3, 13) for Lambda's "python3.13"."""
    major, _, minor = runtime.removeprefix("python").partition(".")
    return int(major), int(minor)


def runtime_interpreter(
    runtime: str,
    *,
    this_python: str = sys.executable,
    this_version: tuple[int, int] = (sys.version_info.major, sys.version_info.minor),
) -> str | None:
    """A Python of the runtime's version on this machine: this one, or pythonX.Y on PATH."""
    major, minor = runtime_version(runtime)
    if this_version == (major, minor):
        return this_python
    found = shutil.which(f"python{major}.{minor}")
    if found is None:
        return None
    return found if _is_version(found, major, minor) else None


@functools.cache
def _is_version(interpreter: str, major: int, minor: int) -> bool:
    """Whether `interpreter` runs Python major.minor. Asked once per process: a version
    manager's shim takes a tenth of a second to answer, and tests evaluate many stacks."""
    try:  # a version manager's shim may be on PATH without that version behind it
        answer = subprocess.run(
            [interpreter, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return answer.stdout.split() == [str(major), str(minor)]


def compile_modules(modules: Sequence[Path], interpreter: str, runtime: str) -> dict[str, Path]:
    """Each module's bytecode as `__pycache__/<name>` → its file, compiled by `interpreter`.

    Into a folder named after the runtime and the sources' contents, so an unchanged package
    is compiled once and the files stay until Pulumi has read them.
    """
    digest = hashlib.sha256(runtime.encode())
    for module in modules:
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    folder = Path(tempfile.gettempdir()) / "s3-fargate-jobs-runner" / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [interpreter, "-c", COMPILE_SCRIPT, str(folder), *map(str, modules)],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"compiling the runner's modules with {interpreter} failed: {done.stderr.strip()}"
        )
    return {f"__pycache__/{name}": folder / name for name in done.stdout.split()}


def package_files(source_dir: Path, runtime: str) -> tuple[dict[str, Path], str | None]:
    """The package as archive path → file, and why it holds no bytecode (None if it does).

    Only the runtime modules: no tests, caches or editor files end up in the package.
    """
    modules = sorted(source_dir.glob("*.py"))
    files = {module.name: module for module in modules}
    interpreter = runtime_interpreter(runtime)
    if interpreter is None:
        major, minor = runtime_version(runtime)
        return files, (
            f"no Python {major}.{minor} here (neither this program's Python nor "
            f"python{major}.{minor} on PATH): the runner's package holds its sources only, "
            "and Lambda compiles them at every cold start"
        )
    return files | compile_modules(modules, interpreter, runtime), None
