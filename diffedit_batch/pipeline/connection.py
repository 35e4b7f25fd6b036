"""Connecting to Ray: join a cluster when one is named, else start Ray in-process; Ray's console output kept quiet.

Quiet (the default): Ray logs errors only on the console, Ray Data's per-dataset progress blocks are off (they stay
in the session's `ray-data.log`), and the job's own progress line or bar is the only progress shown. `verbose`
gives Ray's and Ray Data's usual console output back.
"""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None = None, verbose: bool = False) -> bool:
    """Join the cluster at `address` or RAY_ADDRESS; with neither, start Ray in-process.

    Returns True when the job runs on a cluster it joined (which an autoscaler may grow).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, logging_level=logging.INFO if verbose else logging.ERROR)
    configure_ray_output(verbose)
    return address is not None


def configure_ray_output(verbose: bool) -> None:
    """Ray Data's console output: its progress and execution-plan lines only when `verbose`."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    # Ray Data's logger writes to the session's ray-data.log (kept in full) and to the console: quiet the console.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO if verbose else logging.ERROR)
