"""Named edit presets, and the fast config built on one."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffedit_batch import EditSettings
from diffedit_batch.config import load_config
from diffedit_batch.engine.presets import PRESETS, preset

ROOT = Path(__file__).resolve().parents[1]


def unet_samples_per_edit(settings: EditSettings) -> int:
    steps = settings.edit_steps
    return 2 * settings.num_maps_per_mask + steps * (2 if settings.inversion_guided else 1) + steps * 2


def test_presets_cost_what_their_docstring_says():
    assert preset("exact") == EditSettings()
    assert [unet_samples_per_edit(PRESETS[name]) for name in ("exact", "fast", "fastest")] == [180, 130, 70]
    with pytest.raises(ValueError, match="known presets: exact, fast, fastest"):
        preset("turbo")


def test_sd21_fast_config_is_the_fast_preset():
    fast = load_config(ROOT / "configs" / "sd21-fast.yaml")
    exact = load_config(ROOT / "configs" / "sd21.yaml")
    assert fast.edit == preset("fast")
    assert fast.model == exact.model and fast.job == exact.job
