"""Connecting to Ray: join a cluster when one is named, else start Ray in-process; Ray's console output kept quiet.

Quiet (the default): Ray logs errors only on the console, Ray Data's per-dataset progress blocks are off (they stay
in the session's `ray-data.log`), and the job's own progress line or bar is the only progress shown. `verbose`
gives Ray's and Ray Data's usual console output back.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

import ray

from .placement import JobSetupError

# `host:port` and `ray://host:port` (Ray Client), an IPv6 host in brackets; `auto` and the like are not probed.
_HOST_PORT = re.compile(r"(?:ray://)?(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})/?")


def connect(address: str | None = None, verbose: bool = False, timeout_s: float = 60.0) -> bool:
    """Join the cluster at `address` or RAY_ADDRESS; with neither, start Ray in-process.

    A cluster whose address does not answer within `timeout_s` (job.connect_timeout_s) raises JobSetupError naming
    it: Ray's own connect retries for many minutes, while the caller holds the output's lease. Returns True when
    the job runs on a cluster it joined (which an autoscaler may grow).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address is not None:
            wait_for_cluster(address, timeout_s)
        try:
            ray.init(address=address, log_to_driver=True, logging_level=logging.INFO if verbose else logging.ERROR)
        except ConnectionError as error:  # e.g. `auto` with no cluster on this host
            raise JobSetupError(f"cannot join the Ray cluster at {address}: {_first_line(error)}; start the cluster, "
                                "or fix --address / RAY_ADDRESS (neither: Ray starts in this process)") from None
    configure_ray_output(verbose)
    return address is not None


def wait_for_cluster(address: str, timeout_s: float, retry_s: float = 1.0) -> None:
    """Wait until the head at `address` (`host:port` or `ray://host:port`) accepts a TCP connection, trying every
    `retry_s` (a cluster may still be starting); raise JobSetupError after `timeout_s`. Other address forms
    (`auto`) are left to Ray, which fails fast for them."""
    match = _HOST_PORT.fullmatch(address.strip())
    if match is None:
        return
    host, port = match.group(1).strip("[]"), int(match.group(2))
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, left))):
                return
        except (OSError, OverflowError) as error:  # OverflowError: a port over 65535
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if time.monotonic() + retry_s >= deadline:
            raise JobSetupError(
                f"the Ray cluster at {address} did not answer within {timeout_s:g} s (job.connect_timeout_s; last: "
                f"{reason}); start the cluster or fix --address / RAY_ADDRESS, then run again")
        time.sleep(retry_s)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def configure_ray_output(verbose: bool) -> None:
    """Ray Data's console output: its progress and execution-plan lines only when `verbose`."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    # Ray Data's logger writes to the session's ray-data.log (kept in full) and to the console: quiet the console.
    # Its errors too: a failed task's are a traceback of a screen or more, and the run ends with one line of its own
    # saying what failed (the traceback with --verbose, and in ray-data.log).
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO if verbose else logging.CRITICAL)
