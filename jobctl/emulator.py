"""An embedded AWS API emulator (moto's server mode) bound to loopback on a free port."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

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
