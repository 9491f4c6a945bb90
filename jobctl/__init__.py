"""Operator tools for s3-fargate-jobs: the local demo on an embedded emulator, the job records
(`show`, `jobs`, `status`) and redrive.

The runner's modules (taskrunner/: the job record, the job table) are top-level in the Lambda's
zip; here they are put on the path once, so every command reads jobs with the runner's own code.
"""

import sys
from pathlib import Path

TASKRUNNER_DIR = Path(__file__).resolve().parents[1] / "taskrunner"
if str(TASKRUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(TASKRUNNER_DIR))
