"""The Ray Data pipeline: the only layer that imports Ray."""

from .run import JobSummary, connect, run_job

__all__ = ["JobSummary", "connect", "run_job"]
