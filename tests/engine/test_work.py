"""Less work than the reference, counted with forward hooks on the models."""

from __future__ import annotations

import contextlib

import pytest

from diffedit_batch import EditSettings

from .conftest import photo


class Counter:
    """Counts samples (batch rows) and calls through one module's forward."""

    def __init__(self):
        self.samples = 0
        self.calls = 0
        self.largest_batch = 0

    def __call__(self, module, args, kwargs):
        sample = args[0] if args else next(iter(kwargs.values()))
        self.samples += sample.shape[0]
        self.calls += 1
        self.largest_batch = max(self.largest_batch, sample.shape[0])


@contextlib.contextmanager
def counting(engine):
    counters = {"unet": Counter(), "vae_encoder": Counter(), "text": Counter()}
    handles = [
        engine.unet.register_forward_pre_hook(counters["unet"], with_kwargs=True),
        engine.vae.encoder.register_forward_pre_hook(counters["vae_encoder"], with_kwargs=True),
        engine.text_encoder.register_forward_pre_hook(counters["text"], with_kwargs=True),
    ]
    engine.prompts._cache.clear()  # count text encodes of this call alone
    try:
        yield counters
    finally:
        for handle in handles:
            handle.remove()


def reference_unet_samples(settings: EditSettings) -> int:
    """What the deprecated pipeline spends on one edit: guided mask, inversion and edit."""
    steps = settings.edit_steps
    mask = settings.num_maps_per_mask * (4 if settings.guidance_scale > 1 else 2)
    return mask + steps * (2 if settings.inversion_guided else 1) + steps * (2 if settings.edit_guided else 1)


def test_default_settings_cost_180_unet_samples_per_edit_not_200(engine):
    settings = EditSettings()
    with counting(engine) as count:
        engine.edit([photo(32, 32, 0)], ["a cat"], ["a dog"], [0], settings)
    assert reference_unet_samples(settings) == 200
    # mask: 10 maps x (source, target) unguided = 20 instead of 40; inversion 40 x 2; edit 40 x 2
    assert count["unet"].samples == 20 + 80 + 80


@pytest.mark.parametrize("targets", [1, 4])
def test_targets_of_one_image_share_encode_inversion_and_source_mask(engine, targets):
    settings = EditSettings()
    image = photo(32, 32, 1)
    target_prompts = ["a dog", "a basket of pears", "a photo of a cat", "the bowl"][:targets]
    with counting(engine) as count:
        engine.edit([image] * targets, ["a cat"] * targets, target_prompts, [7] * targets, settings)
    assert count["unet"].samples == 90 + 90 * targets
    assert count["unet"].samples < 200 * targets
    assert count["vae_encoder"].samples == 1
    assert count["text"].samples == 1 + targets + 1  # source, targets, the empty prompt


def test_one_vae_encode_per_distinct_picture_even_when_loaded_twice(engine):
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=2)
    first, same_again, other = photo(32, 40, 3), photo(32, 40, 3), photo(32, 40, 4)
    assert first is not same_again
    with counting(engine) as count:
        engine.edit([first, same_again, other], ["a"] * 3, ["b", "c", "d"], [1, 2, 3], settings)
    assert count["vae_encoder"].samples == 2


def test_text_encoder_runs_once_per_distinct_prompt(engine):
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=2)
    images = [photo(32, 32, i) for i in range(4)]
    with counting(engine) as count:
        engine.edit(images, ["a cat", "a cat", "a dog", "a cat"], ["a dog", "a dog", "a cat", "a bowl"], [1, 2, 3, 4], settings)
    # distinct: "a cat", "a dog", "a bowl" and the empty negative of the inversion
    assert count["text"].samples == 4
    with counting(engine) as count:
        engine.prompts.encode(["a cat"])  # warm the cache
        engine.edit(images[:1], ["a cat"], ["a dog"], [1], settings)
    assert count["text"].samples == 1 + 2  # the cached prompt is not encoded again


def test_unet_calls_never_exceed_the_configured_batch(tiny_model_dir):
    from diffedit_batch import DiffEditEngine

    small = DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu", max_unet_batch=3)
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=2)
    with counting(small) as count:
        small.edit([photo(32, 32, i) for i in range(3)], ["a"] * 3, ["b"] * 3, [1, 2, 3], settings)
    assert count["unet"].largest_batch == 3
    # rows share calls: fewer forward calls than row-by-row would make
    row_by_row_calls = 3 * (2 + 3 + 3)
    assert count["unet"].calls < row_by_row_calls


def test_never_more_unet_samples_than_the_reference(engine):
    for settings in (
        EditSettings(num_inference_steps=6, num_maps_per_mask=3),
        EditSettings(num_inference_steps=6, num_maps_per_mask=3, invert_guidance_scale=1.0),
        EditSettings(num_inference_steps=6, num_maps_per_mask=3, guidance_scale=1.0),
        EditSettings(num_inference_steps=6, num_maps_per_mask=3, paper_unconditional_inversion=True),
    ):
        with counting(engine) as count:
            engine.edit([photo(32, 32, 5)], ["a cat"], ["a dog"], [3], settings)
        assert count["unet"].samples <= reference_unet_samples(settings)
        assert count["unet"].samples == reference_unet_samples(settings) - 2 * settings.num_maps_per_mask * (
            1 if settings.guidance_scale > 1 else 0
        )


def test_out_of_memory_splits_the_batch_instead_of_failing(engine):
    import torch

    from diffedit_batch.engine.conditioning import Conditioning
    from diffedit_batch.engine.unet_runner import UNetRunner

    calls = []

    class FlakyUNet(torch.nn.Module):
        def forward(self, latents, timestep, encoder_hidden_states):
            calls.append(latents.shape[0])
            if latents.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return type("Out", (), {"sample": latents * 2})()

    runner = UNetRunner(FlakyUNet(), max_batch=8)
    latents = torch.arange(7.0).reshape(7, 1, 1, 1)
    out = runner(latents, torch.tensor(1), Conditioning(torch.zeros(7, 1, 1)))
    assert torch.equal(out, latents * 2)
    assert runner.max_batch <= 2 and max(calls) == 7 and calls[-1] <= 2
