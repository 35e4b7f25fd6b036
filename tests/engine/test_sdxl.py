"""SDXL DiffEdit: each row equals the deprecated DiffEdit loops with SDXL conditioning put in (the port in
`testing.reference_sdxl`), and the port itself equals `StableDiffusionXLPipeline` where the two must agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffedit_batch import DiffEditEngine, EditSettings
from diffedit_batch.engine.conditioning import Conditioning
from diffedit_batch.engine.families import UnsupportedModelError, family_of
from diffedit_batch.testing.reference_sdxl import reference_sdxl_pipeline, sdxl_pipeline

from .conftest import photo, reference_edit
from .test_parity import assert_matches

ROWS = [  # (width, height, source, target, seed): sizes differ, so time ids differ by row
    (64, 48, "a bowl of fruits", "a basket of pears", 1),
    (40, 72, "a photo of a cat", "a photo of a dog", 2),
    (64, 48, "a bowl of fruits", "a bowl of pears", 1),
]

SETTINGS = {
    "default_guidance": EditSettings(num_inference_steps=10, num_maps_per_mask=2),
    "non_default": EditSettings(num_inference_steps=12, inpaint_strength=0.6, guidance_scale=5.0,
                                invert_guidance_scale=1.0, num_maps_per_mask=3, mask_encode_strength=0.7,
                                mask_thresholding_ratio=2.0),
    "paper_inversion": EditSettings(num_inference_steps=8, num_maps_per_mask=2, paper_unconditional_inversion=True),
}


@pytest.fixture(scope="module")
def sdxl_reference(sdxl_engine):
    return reference_sdxl_pipeline(sdxl_engine)


def test_the_family_is_read_from_the_model_index(sdxl_engine, engine):
    assert sdxl_engine.family_name == "sdxl" and engine.family_name == "sd"
    assert sdxl_engine.family.force_zeros_for_empty_prompt is True


@pytest.mark.parametrize("name", list(SETTINGS))
def test_sdxl_rows_equal_the_port_row_by_row(sdxl_engine, sdxl_reference, name):
    settings = SETTINGS[name]
    images = [photo(w, h, seed=i) for i, (w, h, *_) in enumerate(ROWS)]
    images[2] = photo(64, 48, seed=0)
    results = sdxl_engine.edit(images, [r[2] for r in ROWS], [r[3] for r in ROWS], [r[4] for r in ROWS], settings)
    for image, (w, h, source, target, seed), result in zip(images, ROWS, results):
        expected_image, expected_mask = reference_edit(sdxl_reference, image, source, target, seed, settings)
        assert result.mask.shape == (h // 8, w // 8)
        assert (result.mask == expected_mask).all()
        assert_matches(result, expected_image, expected_mask)


def test_sdxl_conditioning_reaches_the_unet(sdxl_engine, sdxl_reference):
    """Parity is not vacuous: wrong time ids or no pooled embedding change the edit far beyond the tolerance."""
    settings = SETTINGS["default_guidance"]
    image = photo(64, 48, seed=0)
    [good] = sdxl_engine.edit([image], ["a cat"], ["a dog"], [3], settings)
    inputs = sdxl_engine.run_unet.unet_inputs

    def swapped_size(latents, conditioning):
        kwargs = inputs(latents, conditioning)
        kwargs["added_cond_kwargs"] = {**kwargs["added_cond_kwargs"],
                                       "time_ids": kwargs["added_cond_kwargs"]["time_ids"].flip(-1)}
        return kwargs

    sdxl_engine.run_unet.unet_inputs = swapped_size
    try:
        [bad] = sdxl_engine.edit([image], ["a cat"], ["a dog"], [3], settings)
    finally:
        sdxl_engine.run_unet.unet_inputs = inputs
    assert np.abs(np.asarray(good.image, float) - np.asarray(bad.image, float)).mean() > 2


@torch.no_grad()
def test_the_port_equals_the_sdxl_pipeline_with_a_full_mask_at_strength_one(sdxl_engine, sdxl_reference):
    """With the mask all ones and strength 1, DiffEdit's edit is plain guided DDIM from the most-noised inverted
    latent: StableDiffusionXLPipeline started from that latent (prompt = target, negative = source) must agree."""
    steps, guidance = 8, 6.0
    image = photo(64, 48, seed=5)
    inverted = sdxl_reference.invert(prompt="a bowl of fruits", image=image, num_inference_steps=steps,
                                     inpaint_strength=1.0, generator=torch.Generator().manual_seed(4)).latents
    full = np.ones((1, 48 // 8, 64 // 8), np.float32)
    port = sdxl_reference(prompt="a basket of pears", negative_prompt="a bowl of fruits", mask_image=full,
                          image_latents=inverted, num_inference_steps=steps, inpaint_strength=1.0,
                          guidance_scale=guidance, generator=torch.Generator().manual_seed(4)).images[0]
    pipeline = sdxl_pipeline(sdxl_engine)
    plain = pipeline(prompt="a basket of pears", negative_prompt="a bowl of fruits", latents=inverted[:, 0],
                     height=48, width=64, num_inference_steps=steps, guidance_scale=guidance).images[0]
    assert np.abs(np.asarray(port, float) - np.asarray(plain, float)).mean() <= 0.5


def test_sdxl_precomputed_conditioning_equals_its_text(sdxl_engine):
    settings = EditSettings(num_inference_steps=6, num_maps_per_mask=2)
    image = photo(48, 48, seed=4)
    encoded = sdxl_engine.prompts.encode(["a cat", "a dog"])
    cat, dog = (encoded[("text", text)].conditioning for text in ("a cat", "a dog"))
    [from_text] = sdxl_engine.edit([image], ["a cat"], ["a dog"], [2], settings)
    [from_conditioning] = sdxl_engine.edit([image], [Conditioning(cat.tokens[0], cat.pooled[0])], [dog], [2], settings)
    assert (from_text.mask == from_conditioning.mask).all()
    assert from_text.image.tobytes() == from_conditioning.image.tobytes()
    with pytest.raises(ValueError, match="SDXL prompt embedding must be a Conditioning"):
        sdxl_engine.edit([image], [cat.tokens], ["a dog"], [2], settings)  # a bare tensor lacks the pooled part


def test_sdxl_concept_embeddings_average_tokens_and_pooled(sdxl_engine):
    from diffedit_batch.recipe.concepts import concept_embedding

    captions = ["a bowl of fruits", "a photo of a bowl", "a photo of a bowl"]
    mean = concept_embedding(sdxl_engine, captions)
    encoded = sdxl_engine.prompts.encode(captions)
    each = [encoded[("text", caption)].conditioning for caption in captions]
    torch.testing.assert_close(mean.tokens, torch.cat([c.tokens for c in each]).mean(0, keepdim=True))
    torch.testing.assert_close(mean.pooled, torch.cat([c.pooled for c in each]).mean(0, keepdim=True))
    [by_one] = sdxl_engine.edit([photo(32, 32, 1)], [concept_embedding(sdxl_engine, ["a bowl"])], ["a basket"], [1],
                                EditSettings(num_inference_steps=4, num_maps_per_mask=1))
    [by_text] = sdxl_engine.edit([photo(32, 32, 1)], ["a bowl"], ["a basket"], [1],
                                 EditSettings(num_inference_steps=4, num_maps_per_mask=1))
    assert by_one.image.tobytes() == by_text.image.tobytes()


@pytest.mark.parametrize("components, found", [
    ({"transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
      "text_encoder_3": ["transformers", "T5EncoderModel"], "_class_name": "StableDiffusion3Pipeline"},
     "StableDiffusion3Pipeline with components text_encoder_3, transformer, vae"),
    ({"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
      "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
      "scheduler": ["diffusers", "EulerDiscreteScheduler"], "_class_name": "StableDiffusionXLImg2ImgPipeline"},
     "SDXL refiner"),
])
def test_other_architectures_are_a_clear_error(components, found):
    with pytest.raises(UnsupportedModelError, match=found):
        family_of(components, where="models/x")


def test_a_folder_of_another_architecture_fails_to_load_naming_it(tiny_sdxl_dir, tmp_path):
    import shutil

    folder = tmp_path / "refiner"
    shutil.copytree(tiny_sdxl_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedModelError, match="refiner"):
        DiffEditEngine.from_pretrained(str(folder), device="cpu")


def test_float16_sdxl_runs_its_vae_in_float32_unless_a_separate_vae_is_given(tiny_sdxl_dir, tiny_model_dir):
    """force_upcast (SDXL's VAE overflows in float16): the VAE is loaded in float32 beside a float16 UNet; a
    separate VAE folder (as sdxl-vae-fp16-fix, force_upcast false) runs in float16."""
    from diffedit_batch.engine.loading import load_components

    components, _ = load_components(str(tiny_sdxl_dir), device="cpu", dtype="float16")
    assert components["unet"].dtype == torch.float16 and components["vae"].dtype == torch.float32
    assert components["text_encoder_2"].dtype == torch.float16
    components, _ = load_components(str(tiny_sdxl_dir), device="cpu", dtype="bfloat16")
    assert components["vae"].dtype == torch.bfloat16  # only float16 overflows
    # A pipeline folder with vae/ works as model.vae too; SD's VAE config says no force_upcast... but SD's own
    # pipeline never upcasts: an SD model keeps its VAE in the model's precision.
    sd_components, _ = load_components(str(tiny_model_dir), device="cpu", dtype="float16")
    assert sd_components["vae"].dtype == torch.float16


def test_a_separate_vae_replaces_the_models(tiny_sdxl_dir, tmp_path):
    from diffedit_batch.engine.loading import load_components
    from diffedit_batch.testing.tiny_sd import tiny_vae

    fixed = tmp_path / "sdxl-vae-fp16-fix"
    tiny_vae((8, 16, 16, 16), seed=99, scaling_factor=0.13025, force_upcast=False).save_pretrained(
        fixed, safe_serialization=True)
    components, _ = load_components(str(tiny_sdxl_dir), device="cpu", dtype="float16", vae=str(fixed))
    assert components["vae"].dtype == torch.float16
    own, _ = load_components(str(tiny_sdxl_dir), device="cpu", dtype="float32")
    separate, _ = load_components(str(tiny_sdxl_dir), device="cpu", dtype="float32", vae=str(fixed))
    first = next(iter(own["vae"].state_dict().values()))
    assert not torch.equal(first, next(iter(separate["vae"].state_dict().values())))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_sdxl_on_cuda_upcasts_its_vae_and_makes_finite_edits_close_to_float32(tiny_sdxl_dir):
    exact = DiffEditEngine.from_pretrained(str(tiny_sdxl_dir), device="cuda", dtype=torch.float32)
    half = DiffEditEngine.from_pretrained(str(tiny_sdxl_dir), device="cuda", dtype=torch.float16)
    assert half.unet.dtype == torch.float16 and half.vae.dtype == torch.float32  # force_upcast
    images = [photo(64, 48, 0), photo(48, 64, 1)]
    settings = EditSettings(num_inference_steps=10, num_maps_per_mask=4)
    reference = exact.edit(images, ["a cat"] * 2, ["a dog"] * 2, [1, 2], settings)
    results = half.edit(images, ["a cat"] * 2, ["a dog"] * 2, [1, 2], settings)
    for r, h in zip(reference, results):
        assert h.image is not None and np.isfinite(np.asarray(h.image, float)).all()
        assert (r.mask == h.mask).mean() >= 0.9
        assert np.abs(np.asarray(r.image, float) - np.asarray(h.image, float)).mean() <= 8.0
