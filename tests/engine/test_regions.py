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


def _differ(a, b) -> float:
    """Mean absolute difference of two pictures, in 1/255."""
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


@pytest.fixture(params=["sd3_engine", "flux_engine"])
def flow_engine(request):
    return request.getfixturevalue(request.param)


def test_regions_constrain_the_mask_on_the_flow_families_at_their_latent_size(flow_engine):
    """SD3 and FLUX.1 round pictures down to 16 px and FLUX.1 packs 2x2 latents inside its transformer; the region is
    still one value per unpacked latent cell (the picture's size / 8), and what it keeps is the clean latent z."""
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=2, mask_thresholding_ratio=1.0)
    image = photo(70, 50, seed=2)  # worked at 64 x 48: latent 6 x 8
    source, target = "a bowl of fruits", "a basket of pears"
    [plain] = flow_engine.edit([image], [source], [target], [5], settings)
    assert plain.mask.shape == (6, 8) and plain.mask.any()
    region = np.ones((6, 8), np.uint8)
    region[:, :4] = 0
    none = np.zeros((6, 8), np.uint8)
    constrained, kept, unconstrained = flow_engine.edit([image] * 3, [source] * 3, [target] * 3, [5] * 3, settings,
                                                        regions=[region, none, None])
    assert (constrained.mask == plain.mask * region).all() and 0 < constrained.mask.sum() < plain.mask.sum()
    assert _differ(unconstrained.image, plain.image) <= 0.5  # up to batched float sums
    [empty] = flow_engine.edit([image], [source], [target], [5], settings.replace(mask_thresholding_ratio=1e9))
    assert kept.mask.sum() == 0 and _differ(kept.image, empty.image) <= 0.5  # z itself, decoded
    assert _differ(constrained.image, plain.image) > 1  # the edit saw the region
    with pytest.raises(ValueError, match="row 0: region must be 6x8"):
        flow_engine.edit([image], [source], [target], [5], settings, regions=[np.ones((3, 4), np.uint8)])
