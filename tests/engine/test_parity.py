"""Row i of one batched engine call equals the deprecated diffusers pipeline run on row i alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffedit_batch import EditSettings

from .conftest import photo, reference_edit

ROWS = [  # (width, height, source, target, seed): mixed sizes, prompts and seeds in one call
    (64, 48, "a bowl of fruits", "a basket of pears", 1),
    (40, 72, "a photo of a cat", "a photo of a dog", 2),
    (64, 48, "a bowl of fruits", "a bowl of pears", 1),
    (56, 56, "the cat", "the dog", 12345),
]

SETTINGS = {
    "default": EditSettings(),
    "non_default": EditSettings(
        num_inference_steps=12,
        inpaint_strength=0.6,
        guidance_scale=5.0,
        invert_guidance_scale=1.0,
        num_maps_per_mask=3,
        mask_encode_strength=0.7,
        mask_thresholding_ratio=2.0,
    ),
    "unguided_edit": EditSettings(num_inference_steps=8, guidance_scale=1.0, invert_guidance_scale=3.0, num_maps_per_mask=2),
    "paper_inversion": EditSettings(num_inference_steps=10, num_maps_per_mask=2, paper_unconditional_inversion=True),
}


def assert_matches(result, expected_image, expected_mask):
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1}
    assert result.mask.shape == expected_mask.shape
    assert (result.mask == expected_mask).mean() >= 0.99
    assert result.image.size == expected_image.size and result.image.mode == "RGB"
    difference = np.abs(np.asarray(result.image, np.float64) - np.asarray(expected_image, np.float64)).mean()
    assert difference <= 1.0, f"images differ by {difference:.3f}/255 on average"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_batched_rows_equal_reference_row_by_row(engine, reference, name):
    settings = SETTINGS[name]
    images = [photo(w, h, seed=i) for i, (w, h, *_) in enumerate(ROWS)]
    # Row 2 reuses row 0's picture loaded separately (an equal copy, not the same object).
    images[2] = photo(64, 48, seed=0)
    results = engine.edit(
        images, [r[2] for r in ROWS], [r[3] for r in ROWS], [r[4] for r in ROWS], settings=settings
    )
    assert len(results) == len(ROWS)
    for image, (w, h, source, target, seed), result in zip(images, ROWS, results):
        expected_image, expected_mask = reference_edit(reference, image, source, target, seed, settings)
        assert result.mask.shape == (h // 8, w // 8)
        assert_matches(result, expected_image, expected_mask)


def test_inversion_prompt_conditions_the_inversion(engine, reference):
    settings = EditSettings(num_inference_steps=10, num_maps_per_mask=2)
    image = photo(48, 48, seed=7)
    caption = "a photo of fruits on a table"
    [with_caption] = engine.edit([image], ["a bowl"], ["a basket"], [3], settings, inversion_prompts=[caption])
    [without] = engine.edit([image], ["a bowl"], ["a basket"], [3], settings)
    expected_image, expected_mask = reference_edit(reference, image, "a bowl", "a basket", 3, settings, caption)
    assert_matches(with_caption, expected_image, expected_mask)
    assert np.abs(np.asarray(with_caption.image, float) - np.asarray(without.image, float)).mean() > 0


def test_paper_blend_timing_blends_the_output_timestep_latent(engine, reference):
    """The paper's blend equals the reference's loop with each step's blend moved one latent later."""
    settings = EditSettings(num_inference_steps=10, num_maps_per_mask=2, paper_blend_timing=True)
    image, seed = photo(48, 40, seed=3), 5

    def blend_one_step_later(mask, inverted):
        mask = torch.from_numpy(mask).float()[:, None]
        steps = inverted.transpose(0, 1)  # (K, 1, C, h, w): steps[i] is what the reference blends at step i
        clean = reference.prepare_image_latents(
            reference.image_processor.preprocess(image), 1, torch.float32, "cpu", torch.Generator().manual_seed(seed)
        )
        wanted = list(steps[1:]) + [clean]

        def callback(step, timestep, latents):
            latents.add_((wanted[step] - steps[step]) * (1 - mask))

        return callback

    [result] = engine.edit([image], ["a cat"], ["a dog"], [seed], settings)
    expected_image, expected_mask = reference_edit(
        reference, image, "a cat", "a dog", seed, settings, step_callback=blend_one_step_later
    )
    assert_matches(result, expected_image, expected_mask)
    [reference_timing] = engine.edit([image], ["a cat"], ["a dog"], [seed], settings.replace(paper_blend_timing=False))
    assert np.abs(np.asarray(result.image, float) - np.asarray(reference_timing.image, float)).mean() > 0.5


def test_paper_inversion_differs_from_prompted_inversion(engine):
    base = EditSettings(num_inference_steps=10, num_maps_per_mask=2)
    image = photo(48, 48, seed=9)
    [prompted] = engine.edit([image], ["a cat"], ["a dog"], [1], base)
    [paper] = engine.edit([image], ["a cat"], ["a dog"], [1], base.replace(paper_unconditional_inversion=True))
    assert np.abs(np.asarray(prompted.image, float) - np.asarray(paper.image, float)).mean() > 0.5


def test_row_result_does_not_depend_on_its_batch(engine):
    settings = EditSettings(num_inference_steps=8, num_maps_per_mask=2)
    image = photo(48, 40, seed=1)
    [alone] = engine.edit([image], ["a cat"], ["a dog"], [11], settings)
    batch = engine.edit(
        [photo(48, 40, seed=2), image, photo(32, 64, seed=3)],
        ["a bowl", "a cat", "the cat"],
        ["a basket", "a dog", "the dog"],
        [4, 11, 5],
        settings,
    )
    assert (batch[1].mask == alone.mask).all()
    assert np.abs(np.asarray(batch[1].image, float) - np.asarray(alone.image, float)).mean() <= 0.5


def test_precomputed_embeddings_equal_their_text(engine):
    settings = EditSettings(num_inference_steps=8, num_maps_per_mask=2)
    image = photo(48, 48, seed=4)
    tokens = engine.tokenizer(["a cat", "a dog"], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        source_embedding, target_embedding = engine.text_encoder(tokens.input_ids)[0]
    [from_text] = engine.edit([image], ["a cat"], ["a dog"], [2], settings)
    [from_embeddings] = engine.edit([image], [source_embedding], [target_embedding[None]], [2], settings)
    assert (from_text.mask == from_embeddings.mask).all()
    assert np.abs(np.asarray(from_text.image, float) - np.asarray(from_embeddings.image, float)).mean() <= 0.5
