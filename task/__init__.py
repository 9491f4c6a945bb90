"""The job one Fargate task runs for one uploaded object: `python -m task`.

The frame (settings, ranged streaming download, result upload, exit codes, signals, JSON
logs) lives in this package; the part a user replaces is the processor, see
`task.processor` and `task.objects.Processor`.
"""
