"""The Ray Data pipeline: the only layer that imports Ray.

`driver.run_job` runs a job: `preflight` checks its models and output before Ray starts, `plan` builds the Ray
Data plan from the `stages`, `placement` checks it fits the cluster, `connection` joins or starts Ray, `progress`
shows the run while it streams, `summary` counts what it did.

The names below load on first use, so the command line's checks before a run (`pipeline.preflight`) import no Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["JobSetupError", "JobSummary", "SettingsChanged", "connect", "run_job"]

_HOMES = {"connect": "connection", "run_job": "driver", "JobSetupError": "placement", "JobSummary": "summary",
          "SettingsChanged": "planning"}

if TYPE_CHECKING:
    from .connection import connect
    from .driver import run_job
    from .placement import JobSetupError
    from .planning import SettingsChanged
    from .summary import JobSummary


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
