"""Named edit presets, and the fast config built on one."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffedit_batch import EditSettings
from diffedit_batch.config import load_config
from diffedit_batch.engine.presets import PRESETS, preset
from diffedit_batch.testing.pictures import synthetic_photo as photo

ROOT = Path(__file__).resolve().parents[1]


def unet_samples_per_edit(engine, settings: EditSettings) -> int:
    """What one edit of one picture costs, read off the engine's own counter."""
    before = engine.stats.unet_samples
    engine.edit([photo(32, 32, seed=0)], ["a photo of a cat"], ["a photo of a dog"], [1], settings=settings)
    return engine.stats.unet_samples - before


def test_presets_cost_what_their_docstring_says(engine):
    assert preset("exact") == EditSettings()
    assert [unet_samples_per_edit(engine, PRESETS[name]) for name in ("exact", "fast", "fastest")] == [180, 130, 70]
    with pytest.raises(ValueError, match="known presets: exact, fast, fastest"):
        preset("turbo")


def test_sd21_fast_config_is_the_fast_preset():
    fast = load_config(ROOT / "configs" / "sd21-fast.yaml")
    exact = load_config(ROOT / "configs" / "sd21.yaml")
    assert fast.edit == preset("fast")
    assert fast.model == exact.model and fast.job == exact.job
