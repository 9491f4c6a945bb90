"""`python -m task`: process the object named by S3_BUCKET / S3_KEY; exit codes in exit_codes.py."""

import sys

from task.frame import main

sys.exit(main())
