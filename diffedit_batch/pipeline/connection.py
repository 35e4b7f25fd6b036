"""Connecting to Ray: join a cluster when one is named, else start Ray in-process."""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None = None) -> bool:
    """Join the cluster at `address` or RAY_ADDRESS; with neither, start Ray in-process.

    Returns True when the job runs on a cluster it joined (which an autoscaler may grow).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    return address is not None
