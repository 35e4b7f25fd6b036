"""The Ray Data pipeline: the only layer that imports Ray."""

from .run import JobSetupError, JobSummary, connect, run_job

__all__ = ["JobSetupError", "JobSummary", "connect", "run_job"]
