"""Where the code the program deploys comes from: the runner's source and the job's build
context, inside the installed package or beside infra/ in the repository."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_JOB_IMAGE = "task"  # the folder the default job image is built from


def bundled(folder: str) -> Path:
    """The runner's source or the job's build context: inside the installed package, or beside
    this folder in the repository. Relative to the program's folder, as Pulumi runs it: the
    path is an input of the image, and an absolute one would differ on every machine."""
    inside = PACKAGE_DIR / folder
    found = inside if inside.is_dir() else PACKAGE_DIR.parent / folder
    return Path(os.path.relpath(found))
