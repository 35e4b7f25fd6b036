"""Expand: manifest rows -> one work row per edit, validated and seeded; done ones dropped, duplicates marked."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from diffedit_batch.data.manifest import EditRequest, expand_edits, validate_request
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.seeds import SEED_LIMIT, derive_seed

from ..registry import DONE, DUPLICATE
from ..rows import failed, to_table


def expand_requests(
    batch: pa.Table, *, registry, base_dir: str, job_seed: int, caption_available: bool = False
) -> pa.Table:
    """Manifest rows -> one row per edit. Invalid rows become error rows; done ones are dropped.

    `registry` answers each edit id's claim (`..registry.EditRegistry`, or its Ray actor handle).
    """
    requests: list[EditRequest] = []
    for row in batch.to_pylist():
        requests.extend(expand_edits(row, base_dir=base_dir))
    claims = _claim(registry, [request.edit_id for request in requests])
    out = []
    for request, claim in zip(requests, claims):
        if claim == DONE:
            continue
        row = {**request.to_dict(), "status": Status.PENDING}
        if claim == DUPLICATE:
            message = f"duplicate id {request.edit_id!r}: an earlier row with it is edited"
            out.append({**failed(row, ErrorClass.DUPLICATE_ID, message), "status": Status.DUPLICATE})
            continue
        problem = validate_request(request, caption_available=caption_available)
        if problem is not None:
            out.append(failed(row, ErrorClass.INVALID_ROW, problem))
            continue
        if row["seed"] is None:
            row["seed"] = derive_seed(job_seed, request.row_id)
        out.append(row)
    return to_table(_safe_for_arrow(out))


def _claim(registry, edit_ids: list[str | None]) -> list[str]:
    """Ask the registry: a Ray actor handle in the job, a plain object in tests."""
    claim = registry.claim
    if hasattr(claim, "remote"):
        import ray  # the handle came from the pipeline; resolving it needs Ray

        return ray.get(claim.remote(edit_ids))
    return claim(edit_ids)


def _safe_for_arrow(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mistyped or out-of-range values (already recorded as errors) are made to fit the schema: prompts are
    stringified, a seed that is no int64 is dropped (the error message names it)."""
    for row in rows:
        for name in ("source_prompt", "target_prompt", "inversion_prompt", "source_concept", "target_concept"):
            if row.get(name) is not None and not isinstance(row[name], str):
                row[name] = repr(row[name])[:200]
        seed = row.get("seed")
        if seed is not None and (not isinstance(seed, int) or not -SEED_LIMIT <= seed < SEED_LIMIT):
            row["seed"] = None
    return rows
