"""Every exit code `python -m task` can return, in one place for the runner, demo and alarms.

| code | name               | meaning                                                        |
|------|--------------------|----------------------------------------------------------------|
| 0    | OK                 | the whole object was processed and its result written         |
| 1    | UNEXPECTED         | a bug in the frame: the log line carries the traceback         |
| 2    | BAD_SETTINGS       | a required variable is missing or a setting has a bad value    |
| 3    | OBJECT_UNAVAILABLE | the object (or version) does not exist or may not be read      |
| 4    | OBJECT_CHANGED     | the object was overwritten while it was read (unversioned)     |
| 5    | DOWNLOAD_FAILED    | S3 kept failing while the object was read (after retries)      |
| 6    | PROCESSING_FAILED  | the processor raised or returned something not JSON-able       |
| 7    | RESULT_NOT_WRITTEN | processing finished but the result object could not be written |
| 8    | TIMED_OUT          | ran longer than TASK_TIMEOUT_SECONDS (taskTimeoutMinutes)      |
| 130  | INTERRUPTED        | stopped by SIGINT (128 + 2); no result written                  |
| 143  | STOPPED            | stopped by SIGTERM (128 + 15): task stopped or Spot reclaimed   |

No code but 0 ever comes with a result object: a result is only written for a whole object.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """The process exit status; see the module docstring for what each one means."""

    OK = 0
    UNEXPECTED = 1
    BAD_SETTINGS = 2
    OBJECT_UNAVAILABLE = 3
    OBJECT_CHANGED = 4
    DOWNLOAD_FAILED = 5
    PROCESSING_FAILED = 6
    RESULT_NOT_WRITTEN = 7
    TIMED_OUT = 8
    INTERRUPTED = 128 + signal.SIGINT
    STOPPED = 128 + signal.SIGTERM

    @classmethod
    def for_signal(cls, signal_number: int) -> ExitCode:
        """The shell convention (128 + signal number); SIGALRM is the task's own time limit."""
        if signal_number == signal.SIGALRM:
            return cls.TIMED_OUT
        return cls.INTERRUPTED if signal_number == signal.SIGINT else cls.STOPPED
