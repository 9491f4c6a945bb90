"""Just enough of a Dockerfile reader to check what the image promises the task definition.

No Docker engine runs here, so the tests read the instructions the image would be built from:
its environment, user, volumes, working directory and command.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "task" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, as Docker treats it
    arguments: str  # continuation lines joined, comments dropped


def parse(text: str) -> list[Instruction]:
    """The instructions in order; a trailing backslash continues an instruction."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker also drops comment lines inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str] | None:
    """The argument list of a JSON-array (exec form) instruction; None for shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    return None


@dataclass(frozen=True)
class Image:
    """What the final stage of a Dockerfile declares."""

    instructions: tuple[Instruction, ...]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Image:
        return cls(tuple(parse(path.read_text())))

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    @property
    def user(self) -> str | None:
        return self.last("USER")

    @property
    def workdir(self) -> str | None:
        return self.last("WORKDIR")

    @property
    def command(self) -> str | None:
        """CMD as written; see `exec_form` for its argument list."""
        return self.last("CMD")

    @property
    def volumes(self) -> set[str]:
        paths: set[str] = set()
        for arguments in self.all("VOLUME"):
            paths.update(exec_form(arguments) or arguments.split())
        return paths

    @property
    def environment(self) -> dict[str, str]:
        """ENV key=value pairs in order, later ones winning (the legacy `ENV key value` too)."""
        env: dict[str, str] = {}
        for arguments in self.all("ENV"):
            words = shlex.split(arguments)
            if words and "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, _, value = word.partition("=")
                env[name] = value
        return env
