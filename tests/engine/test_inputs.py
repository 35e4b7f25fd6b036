"""Settings validation, malformed calls, prompt truncation and safe loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffedit_batch import DiffEditEngine, EditSettings

from diffedit_batch.data.images import mask_coverage

from .conftest import photo


@pytest.mark.parametrize(
    "changes",
    [
        {"num_inference_steps": 0},
        {"num_inference_steps": 2.5},
        {"inpaint_strength": 0},
        {"inpaint_strength": 1.5},
        {"guidance_scale": -1},
        {"invert_guidance_scale": float("nan")},
        {"num_maps_per_mask": 0},
        {"num_maps_per_mask": True},
        {"mask_encode_strength": 1.01},
        {"mask_thresholding_ratio": 0},
        {"num_inference_steps": 3, "inpaint_strength": 0.2},
        {"paper_blend_timing": "yes"},
    ],
)
def test_invalid_settings_raise_a_clear_value_error(changes):
    with pytest.raises(ValueError, match="EditSettings"):
        EditSettings(**changes)


def test_defaults_are_the_reference_defaults():
    settings = EditSettings()
    assert (settings.num_inference_steps, settings.inpaint_strength, settings.guidance_scale) == (50, 0.8, 7.5)
    assert (settings.invert_guidance_scale, settings.num_maps_per_mask) == (7.5, 10)
    assert (settings.mask_encode_strength, settings.mask_thresholding_ratio) == (0.5, 3.0)
    assert not settings.paper_unconditional_inversion and not settings.paper_blend_timing


def test_malformed_calls_name_the_row(engine):
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=1)
    image = photo(32, 32, 0)
    with pytest.raises(ValueError, match="target_prompts has 1 entries for 2 images"):
        engine.edit([image, image], ["a", "b"], ["c"], [1, 2], settings)
    with pytest.raises(TypeError, match="row 1: seed must be an integer"):
        engine.edit([image, image], ["a", "b"], ["c", "d"], [1, "2"], settings)
    with pytest.raises(ValueError, match=r"row 0: seed must be in \[0, 2\*\*63\)"):  # the one seed range
        engine.edit([image], ["a"], ["b"], [2**63], settings)
    with pytest.raises(TypeError, match="row 0: target prompt must be a string, a tensor or a Conditioning"):
        engine.edit([image], ["a"], [None], [1], settings)
    with pytest.raises(ValueError, match="row 0: image of 4x40 px is smaller"):
        engine.edit([photo(4, 40, 0)], ["a"], ["b"], [1], settings)
    with pytest.raises(ValueError, match="prompt embedding must have shape"):
        engine.edit([image], [torch.zeros(77, 5)], ["b"], [1], settings)
    assert engine.edit([], [], [], [], settings) == []


def test_long_prompts_are_truncated_and_reported(engine):
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=1)
    long_prompt = "a photo of " + "very " * 100 + "large cat"
    results = engine.edit(
        [photo(32, 32, 0)] * 2, [long_prompt, "a cat"], ["a dog", "a dog ünïcødé 🐶"], [1, 1], settings
    )
    assert results[0].truncated_prompts == ("source", "inversion")
    assert results[1].truncated_prompts == ()


def test_odd_sizes_round_down_to_the_latent_grid(engine):
    [result] = engine.edit([photo(45, 33, 0)], ["a"], ["b"], [1], EditSettings(num_inference_steps=4, num_maps_per_mask=1))
    assert result.image.size == (40, 32) and result.mask.shape == (4, 5)
    assert 0.0 <= mask_coverage(result.mask) <= 1.0


def test_loading_refuses_pickled_weights(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    unsafe = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, unsafe)
    weights = unsafe / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), unsafe / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(Exception, match="safetensors|diffusion_pytorch_model"):
        DiffEditEngine.from_pretrained(str(unsafe), device="cpu")


def test_from_pretrained_uses_ddim_schedulers_from_the_model_config(engine, tiny_model_dir):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    assert isinstance(engine.scheduler, DDIMScheduler)
    assert isinstance(engine.inverse_scheduler, DDIMInverseScheduler)
    assert engine.scheduler.config.prediction_type == "v_prediction"
    assert engine.vae_scale_factor == 8
    assert engine.unet.dtype == torch.float32 and engine.device.type == "cpu"


def test_asking_for_cuda_without_it_is_a_clear_error(tiny_model_dir, monkeypatch):
    # CUDA is hidden rather than the test skipped, so it runs (and asserts) on GPU machines too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device cuda was asked for, but CUDA is not available"):
        DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cuda")


def test_identical_source_and_target_give_a_full_mask_like_the_reference(engine):
    [result] = engine.edit([photo(32, 32, 2)], ["a cat"], ["a cat"], [1], EditSettings(num_inference_steps=4, num_maps_per_mask=1))
    assert result.mask.all()
    assert np.asarray(result.image).shape == (32, 32, 3)
