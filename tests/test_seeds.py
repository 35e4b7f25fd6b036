"""Seeds: one range, and derived seeds that are the same in every process and version."""

from __future__ import annotations

from diffedit_batch.seeds import SEED_LIMIT, concept_seed, derive_seed, is_seed, seed_problem


def test_derive_seed_is_stable_and_spreads():
    # A pinned value: derived seeds must not depend on the process (Python's hash() is salted)
    # nor change between versions, or a resumed job would edit with different noise.
    assert derive_seed(0, "row-1") == 1834959932965130178
    seeds = {derive_seed(0, f"row-{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, "row-1") != derive_seed(0, "row-1")


def test_concept_seeds_are_pinned_and_in_range():
    # Pinned: a concept's captions, and so its prompt embedding, must not change between versions.
    assert concept_seed(0, "bowl") == concept_seed(0, "bowl") != concept_seed(1, "bowl")
    assert all(0 <= concept_seed(0, f"c{i}") < SEED_LIMIT for i in range(200))


def test_one_range_for_every_seed():
    assert SEED_LIMIT == 2**63
    assert is_seed(0) and is_seed(2**63 - 1)
    assert not is_seed(2**63) and not is_seed(-1) and not is_seed(True) and not is_seed(3.0)
    assert seed_problem(2**64 - 1) == "seed must be in [0, 2**63), got 18446744073709551615"
    assert seed_problem("7") == "seed must be an integer, got str"
    assert seed_problem(7) is None
