"""The GPU fast path's switches: compile once per engine, channels_last, VAE slicing/tiling, half precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffedit_batch import DiffEditEngine, EditSettings

from .conftest import photo

QUICK = EditSettings(num_inference_steps=4, num_maps_per_mask=2)


def test_unet_is_compiled_once_per_engine_not_per_batch(tiny_model_dir, monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):
        compiled.append(module)
        return module  # the real compile needs minutes of C++ builds on a CPU; the call count is the point

    monkeypatch.setattr(torch, "compile", fake_compile)
    engine = DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu", compile_unet=True)
    for seed in (1, 2):
        engine.edit([photo(32, 32, seed)], ["a cat"], ["a dog"], [seed], QUICK)
    assert len(compiled) == 1


def test_memory_layout_and_vae_switches(tiny_model_dir):
    engine = DiffEditEngine.from_pretrained(
        str(tiny_model_dir), device="cpu", channels_last=True, vae_slicing=True, vae_tiling=True
    )
    conv = engine.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert engine.vae.use_slicing and engine.vae.use_tiling
    plain = DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu")
    assert not plain.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # the switches change how, not what: the same edit
    [a] = engine.edit([photo(48, 40, 1)], ["a cat"], ["a dog"], [3], QUICK)
    [b] = plain.edit([photo(48, 40, 1)], ["a cat"], ["a dog"], [3], QUICK)
    assert (a.mask == b.mask).mean() >= 0.99
    assert np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).mean() <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda_stays_close_to_float32(tiny_model_dir, dtype):
    exact = DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cuda", dtype=torch.float32)
    half = DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cuda", dtype=dtype)
    images = [photo(64, 48, 0), photo(48, 64, 1)]
    settings = EditSettings(num_inference_steps=10, num_maps_per_mask=4)
    reference = exact.edit(images, ["a cat"] * 2, ["a dog"] * 2, [1, 2], settings)
    results = half.edit(images, ["a cat"] * 2, ["a dog"] * 2, [1, 2], settings)
    for r, h in zip(reference, results):
        assert (r.mask == h.mask).mean() >= 0.9
        assert np.abs(np.asarray(r.image, float) - np.asarray(h.image, float)).mean() <= 8.0
