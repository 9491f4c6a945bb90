"""JSON-lines logging on stdout: one object per line, which CloudWatch Logs Insights parses."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any

_lock = threading.Lock()


def utc_now() -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as every log line and result uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Write one JSON line: time, level, event, then the given fields (camelCase names)."""
    record = {"time": utc_now(), "level": level, "event": event, **fields}
    line = json.dumps(record, default=str, ensure_ascii=False)
    # Held so lines from threads never interleave; flushed so a killed task loses nothing.
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
