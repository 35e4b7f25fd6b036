"""Run files: `PREFIX/runs/<run_id>.json`, each run's config at its start and its counts at its end.

A run file also keeps, under `settings`, the settings behind each settings fingerprint its records carry
(fingerprint -> the pixel settings, `config.fingerprint`): a record says which settings made it, the run files say
what they were.

They describe the runs for people and the report; the records are the truth, so an unreadable run file is
skipped, never an error.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import uuid

from .layout import OutputLayout
from .storage import StorageError, StorageOptions, delete, list_files, read_bytes, write_bytes_atomic

__all__ = ["delete_run_metadata", "new_run_id", "read_run_metadata", "settings_described", "write_run_metadata"]


def new_run_id() -> str:
    """A run's id: its start time (sortable) and a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def write_run_metadata(prefix: str, metadata: dict, options: StorageOptions | None = None) -> str:
    """Write `metadata` (which holds `run_id`) atomically as the run's file; return its URI."""
    uri = OutputLayout(prefix).run_file(metadata["run_id"])
    write_bytes_atomic(uri, json.dumps(metadata, indent=1).encode(), options)
    return uri


def read_run_metadata(prefix: str, options: StorageOptions | None = None) -> list[dict]:
    """The job's run files, oldest first. Unreadable or malformed files are skipped."""
    runs = []
    for uri in list_files(OutputLayout(prefix).runs, ".json", options):
        try:
            data = json.loads(read_bytes(uri, options))
        except (StorageError, ValueError):
            continue
        if isinstance(data, dict):
            data.setdefault("run_id", posixpath.basename(uri)[: -len(".json")])
            runs.append(data)
    return sorted(runs, key=lambda run: str(run.get("run_id")))


def delete_run_metadata(prefix: str, run_id: str, options: StorageOptions | None = None) -> None:
    """Delete a run's file (a run refused before any work leaves none)."""
    delete(OutputLayout(prefix).run_file(run_id), options)


def settings_described(runs: list[dict]) -> dict[str, dict]:
    """Settings fingerprint -> the settings behind it, from run files (`read_run_metadata`); the newest run's
    description wins (they are the same settings)."""
    described: dict[str, dict] = {}
    for run in runs:
        settings = run.get("settings")
        if isinstance(settings, dict):
            described.update({key: value for key, value in settings.items() if isinstance(value, dict)})
    return described
