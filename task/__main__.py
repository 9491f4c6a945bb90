"""`python -m task`: process the object named by S3_BUCKET / S3_KEY; exit codes in exit_codes.py."""

import os
import sys

from task.frame import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# The outcome is decided and logged. A normal exit would join the download threads, and one
# stuck on a stalled connection could hold the task past Fargate's 30 s stop timeout.
os._exit(code)
