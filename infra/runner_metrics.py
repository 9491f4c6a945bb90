"""The metrics the runner writes, as the alarms and the dashboard read them.

The runner writes them as embedded-metric-format lines (taskrunner/reports.py): namespace
S3FargateJobs, dimension Jobs = the job table's name, so that two systems in one account keep
their own. A test holds these names to the runner's.
"""

from __future__ import annotations

NAMESPACE = "S3FargateJobs"
JOBS_DIMENSION = "Jobs"
CAUSE_DIMENSION = "Cause"  # Retries only: why the attempt before stopped
# At each job's final stop (Count).
JOBS_SUCCEEDED = "JobsSucceeded"
JOBS_FAILED = "JobsFailed"
# Per stopped attempt (Seconds): how long its task ran.
TASK_DURATION = "TaskDurationSeconds"
# Per retried attempt (Count), with the Cause dimension.
RETRIES = "Retries"
# From the sweep, every minute, also when nothing waits (gauges).
OLDEST_WAIT = "OldestWaitSeconds"
JOBS_WAITING = "JobsWaiting"
JOBS_RUNNING = "JobsRunning"
