"""One settings object per row: each row equals the reference with its own settings, and a picture's candidates
share its mask predictions and its inversion (a lower strength's inversion is a prefix of a higher one's)."""

from __future__ import annotations

import numpy as np
import pytest

from diffedit_batch import EditSettings

from .conftest import photo, reference_edit
from .test_parity import assert_matches
from .test_work import counting

BASE = EditSettings(num_inference_steps=10, num_maps_per_mask=2)
CANDIDATES = [  # threshold, strength and guidance vary; one seed: what candidates of one request look like
    BASE,
    BASE.replace(mask_thresholding_ratio=2.0, inpaint_strength=0.5, guidance_scale=11.0),
    BASE.replace(mask_thresholding_ratio=4.0, inpaint_strength=0.7, guidance_scale=9.0),
    BASE.replace(inpaint_strength=0.6, guidance_scale=1.0),  # unguided edit: a walk of its own
]


def test_each_row_equals_the_reference_with_its_own_settings(engine, reference):
    image = photo(48, 40, seed=2)
    other = photo(40, 48, seed=3)
    settings = CANDIDATES + [BASE.replace(num_inference_steps=8, invert_guidance_scale=1.0, paper_blend_timing=False),
                             BASE.replace(num_maps_per_mask=3, mask_encode_strength=0.6, inpaint_strength=0.9)]
    images = [image] * len(CANDIDATES) + [other, image]
    results = engine.edit(images, ["a cat"] * len(images), ["a dog"] * len(images), [5] * len(images), settings)
    for result, each, picture in zip(results, settings, images):
        expected_image, expected_mask = reference_edit(reference, picture, "a cat", "a dog", 5, each)
        assert_matches(result, expected_image, expected_mask)


def test_rows_that_differ_only_in_threshold_share_everything_but_the_threshold(engine):
    low, high = BASE.replace(mask_thresholding_ratio=1.0), BASE.replace(mask_thresholding_ratio=6.0)
    results = engine.edit([photo(48, 48, 1)] * 2, ["a cat"] * 2, ["a dog"] * 2, [1, 1], [low, high])
    assert results[0].mask.sum() > results[1].mask.sum()  # a lower clamp marks more cells


def test_four_candidates_cost_one_mask_one_inversion_and_four_edits(engine):
    settings = CANDIDATES[:3] + [BASE.replace(mask_thresholding_ratio=2.5, inpaint_strength=0.8, guidance_scale=5.0)]
    with counting(engine) as count:
        engine.edit([photo(48, 48, 4)] * 4, ["a cat"] * 4, ["a dog"] * 4, [9] * 4, settings)
    mask = 2 * BASE.num_maps_per_mask  # source and target, unguided, once
    inversion = 2 * max(s.edit_steps for s in settings)  # guided, to the highest strength, once
    edits = sum(2 * s.edit_steps for s in settings)
    assert count["unet"].samples == mask + inversion + edits
    assert count["vae_encoder"].samples == 1


def test_lower_strengths_join_the_denoising_walk(engine):
    """Candidates of different strengths share UNet calls once their steps begin: fewer calls than one walk each."""
    settings = [BASE.replace(inpaint_strength=s) for s in (0.5, 0.6, 0.7, 0.8)]
    with counting(engine) as count:
        engine.edit([photo(32, 32, 6)] * 4, ["a cat"] * 4, ["a dog"] * 4, [3] * 4, settings)
    # mask: 1 call; inversion: one walk of 8 steps; edit: one walk of 8 steps (not 5 + 6 + 7 + 8 calls)
    assert count["unet"].calls == 1 + 8 + 8


def test_settings_per_row_are_checked(engine):
    image = photo(32, 32, 0)
    with pytest.raises(ValueError, match="settings has 1 entries for 2 images"):
        engine.edit([image, image], ["a", "b"], ["c", "d"], [1, 2], [BASE])
    with pytest.raises(TypeError, match="row 1: settings must be EditSettings"):
        engine.edit([image, image], ["a", "b"], ["c", "d"], [1, 2], [BASE, {"guidance_scale": 2}])


def test_a_row_alone_equals_the_row_among_candidates(engine):
    image = photo(40, 40, seed=8)
    together = engine.edit([image] * 4, ["a bowl"] * 4, ["a basket"] * 4, [2] * 4, CANDIDATES)
    for i, each in enumerate(CANDIDATES):
        [alone] = engine.edit([image], ["a bowl"], ["a basket"], [2], each)
        assert (alone.mask == together[i].mask).all()
        assert np.abs(np.asarray(alone.image, float) - np.asarray(together[i].image, float)).mean() <= 0.5
