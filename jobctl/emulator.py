"""An embedded AWS API emulator (moto's server mode) bound to loopback on a free port."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from moto.server import ThreadedMotoServer

# moto accepts any credentials; dummy ones make boto3 sign requests without reading the
# user's real profile, so nothing run against the emulator can reach AWS by mistake.
_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # a dummy credential for the emulator
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@contextmanager
def running_emulator() -> Iterator[str]:
    """Start moto on 127.0.0.1 (port chosen by the OS), yield its URL, always stop it."""
    # The server logs every request through werkzeug; a person watching the demo needs none.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


STARTUP_SECONDS = 30.0


class EmulatorError(RuntimeError):
    """The emulator did not start; the message says what it printed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def emulator_process() -> Iterator[str]:
    """moto's server in a child process: its own state, and nothing left once it is stopped.

    The demo uses this rather than `running_emulator` so each run starts from an empty
    emulator even inside a process that ran one before (moto's state is per process).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The server logs every request to stderr: a file, not a pipe nobody reads, whose full
    # buffer would block the server mid-request once a burst has made enough of them.
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):  # noqa: S310 - our loopback server
                        break
                except OSError as error:
                    if child.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise EmulatorError(
                            f"the emulator (moto) did not start on {url}: {log.read() or error}"
                        ) from error
                    time.sleep(0.02)
            yield url
        finally:
            # Killed, not asked to stop: the emulator keeps nothing, and an interpreter's exit
            # with every backend loaded took a third of a second of its own.
            child.kill()
            child.wait()


# moto moves a task one step towards STOPPED (DEACTIVATING, STOPPING, ...) each time it is
# described, so after a few DescribeTasks a task whose job still runs would read as stopped, with
# moto's made-up exit code 0: the runner's sweep would settle it as a success. Fargate keeps a
# task RUNNING while its container runs; this keeps moto's there until StopTask.
TASK_MODEL = "ecs::task"
HELD_TASKS: dict[str, Any] = {"progression": "manual", "times": 10**9}


def hold_tasks_running(endpoint_url: str) -> None:
    """Keep the emulator's ECS tasks RUNNING until they are stopped (see HELD_TASKS)."""
    request = urllib.request.Request(  # noqa: S310 - our loopback server
        f"{endpoint_url}/moto-api/state-manager/set-transition",
        data=json.dumps({"model_name": TASK_MODEL, "transition": HELD_TASKS}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - our loopback server
        pass


def point_at_emulator(environ: MutableMapping[str, str], endpoint_url: str) -> None:
    """Make boto3 in this environment (a process's or a child's) talk to the emulator only."""
    environ.update(_DUMMY_ENV)
    environ["AWS_ENDPOINT_URL"] = endpoint_url
    environ.pop("AWS_PROFILE", None)


def emulator_environment(endpoint_url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of base (default: this process's environment) pointed at the emulator."""
    env = dict(os.environ if base is None else base)
    point_at_emulator(env, endpoint_url)
    return env
