"""Operator tools for s3-fargate-jobs: the local demo on an embedded emulator, and redrive."""
