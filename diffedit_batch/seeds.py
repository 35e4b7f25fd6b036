"""Seeds: the one range every seed lives in, and the seeds derived for rows and concepts.

Seeds are inputs, never hidden global state: a row's seed is its manifest `seed`, or one derived from the job
seed and the row id, so a row's result does not depend on its batch, its worker or the run. The range is what
the result manifest can store (a signed 64-bit integer), so every seed the job accepts can be written back.
"""

from __future__ import annotations

import hashlib

SEED_LIMIT = 2**63
"""Seeds are integers in [0, SEED_LIMIT)."""


def is_seed(value: object) -> bool:
    """True for an int (not a bool) in [0, SEED_LIMIT)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT


def seed_problem(value: object) -> str | None:
    """Why `value` is not a seed, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"seed must be an integer, got {type(value).__name__}"
    if not 0 <= value < SEED_LIMIT:
        return f"seed must be in [0, 2**63), got {value}"
    return None


def _digest(material: str) -> int:
    # SHA-256, so a derived seed is the same in every process and on every host (unlike the salted `hash`).
    # surrogatepass: an id decoded from bad bytes may hold a lone surrogate; it must hash, not crash.
    return int.from_bytes(hashlib.sha256(material.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def derive_seed(job_seed: int, row_id: str) -> int:
    """The seed of a manifest row that has none: from the job seed and the row id, in [0, SEED_LIMIT)."""
    return _digest(f"{int(job_seed)}:{row_id}") >> 1


def concept_seed(seed: int, concept: str) -> int:
    """The sampling seed of one concept's captions: from the concepts seed and the concept, in [0, SEED_LIMIT)."""
    return _digest(f"{int(seed)}\x00{concept}") & (SEED_LIMIT - 1)
