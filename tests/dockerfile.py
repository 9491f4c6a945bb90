"""Just enough of a Dockerfile reader to check what the image promises the task definition.

No Docker engine runs here, so the tests read the instructions the image would be built from:
its environment, user, volumes, working directory and command.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "task" / "Dockerfile"
# Every job image the repository ships: the default one, and each example (examples/*/).
JOB_DOCKERFILES = (DOCKERFILE, *sorted(REPO.glob("examples/*/Dockerfile")))


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


def exec_form(arguments: str, *, allow_empty: bool = False) -> list[str] | None:
    """The argument list of a JSON-array (exec form) instruction; None for shell form.

    An empty list is exec form only where Docker gives it a meaning: `ENTRYPOINT []` clears the
    base image's entrypoint.
    """
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value if value or allow_empty else None


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
    def entrypoint(self) -> str | None:
        """ENTRYPOINT as written, if this Dockerfile declares one."""
        return self.last("ENTRYPOINT")

    @property
    def argv(self) -> list[str] | None:
        """What the container runs: ENTRYPOINT's arguments, then CMD's; None unless both are exec
        form. Without an ENTRYPOINT here, CMD alone (a base image's own is not visible here)."""
        command = exec_form(self.command or "")
        if command is None:
            return None
        if self.entrypoint is None:
            return command
        entrypoint = exec_form(self.entrypoint, allow_empty=True)
        return None if entrypoint is None else [*entrypoint, *command]

    @property
    def copies(self) -> list[tuple[list[str], str]]:
        """Each COPY from the build context: its sources and destination, flags left out."""
        found: list[tuple[list[str], str]] = []
        for arguments in self.all("COPY"):
            words = arguments.split()
            flags = list(takewhile(lambda word: word.startswith("--"), words))
            if any(flag.startswith("--from=") for flag in flags):
                continue  # from another stage or image, not from the context
            rest = words[len(flags) :]
            paths = exec_form(" ".join(rest)) or rest
            found.append((paths[:-1], paths[-1]))
        return found

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
