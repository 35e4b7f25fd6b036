"""The Ray Data pipeline: the only layer that imports Ray.

`driver.run_job` runs a job: `plan` builds the Ray Data plan from the `stages`, `placement` checks it fits the
cluster, `connection` joins or starts Ray, `progress` logs while it streams, `summary` counts what it did.
"""

from .connection import connect
from .driver import run_job
from .placement import JobSetupError
from .summary import JobSummary

__all__ = ["JobSetupError", "JobSummary", "connect", "run_job"]
