"""A per-row region constraint on the mask: DiffEdit's mask AND the region, the work shared, the rest unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from diffedit_batch import EditSettings

from .conftest import photo

SETTINGS = EditSettings(num_inference_steps=6, num_maps_per_mask=2)


def test_a_region_ands_the_mask_and_a_row_without_one_is_unchanged(engine):
    image = photo(48, 40, seed=2)
    plain = engine.edit([image], ["a cat"], ["a dog"], [5], SETTINGS)[0]
    assert plain.mask[2].any() and plain.mask[3].any()
    region = np.ones((5, 6), np.uint8)  # latent size of 48x40: 6 x 5 cells
    region[2] = 0
    samples = engine.stats.unet_samples
    results = engine.edit([image, image], ["a cat"] * 2, ["a dog"] * 2, [5, 5], SETTINGS, regions=[region, None])
    constrained, unconstrained = results
    assert (constrained.mask == plain.mask * region).all()
    assert (unconstrained.mask == plain.mask).all()
    assert np.array_equal(np.asarray(unconstrained.image), np.asarray(plain.image))
    assert constrained.mask.sum() < plain.mask.sum()  # the region took something away...
    assert not np.array_equal(np.asarray(constrained.image), np.asarray(plain.image))  # ...and the edit saw it
    # one set of mask predictions and one inversion for both rows: the mask's 2 x 2 maps, then one walk each way
    # for the two edit units, so more than one row's work but less than two
    assert engine.stats.unet_samples - samples < 2 * _one_row_samples(engine, image)


def _one_row_samples(engine, image) -> int:
    before = engine.stats.unet_samples
    engine.edit([image], ["a cat"], ["a fox"], [6], SETTINGS)
    return engine.stats.unet_samples - before


def test_an_empty_region_leaves_an_empty_mask_and_a_wrong_size_is_refused(engine):
    image = photo(48, 40, seed=4)
    [result] = engine.edit([image], ["a cat"], ["a dog"], [1], SETTINGS, regions=[np.zeros((5, 6), np.uint8)])
    assert result.mask.sum() == 0
    with pytest.raises(ValueError, match="row 0: region must be 5x6"):
        engine.edit([image], ["a cat"], ["a dog"], [1], SETTINGS, regions=[np.ones((6, 5), np.uint8)])
