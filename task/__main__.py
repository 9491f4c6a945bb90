"""`python -m task`: process the object named by S3_BUCKET / S3_KEY; exit codes in exit_codes.py."""

import gc
import os
import sys

# Importing botocore is most of the task's start-up: tens of thousands of objects that live
# as long as the task. The cycle collector's passes over them while they are made are pure
# cost (~4% of the imports' CPU), and so would be its later full passes: they are frozen.
gc.disable()
from task.frame import main  # noqa: E402

gc.freeze()
gc.enable()

code = main()
sys.stdout.flush()
sys.stderr.flush()
# The outcome is decided and logged. A normal exit would join the download threads, and one
# stuck on a stalled connection could hold the task past Fargate's 30 s stop timeout.
os._exit(code)
