"""DiffEdit on flow-matching transformers (SD 3/3.5, FLUX.1-dev and -schnell), the issue's properties on tiny
models: at a full mask and strength 1 the edit equals the model's own pipeline run from the inverted latent (the
inversion walked independently, `testing.reference_flow`); at an empty mask it returns z; rows of different
settings, K targets and candidates in one call equal the same rows edited alone, at two latent sizes."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch

from diffedit_batch import EditSettings
from diffedit_batch.testing.pictures import synthetic_photo as photo
from diffedit_batch.testing.reference_flow import clean_latent, flow_pipeline, pipeline_from, reverse_euler

FAMILIES = ["sd3_engine", "flux_engine", "flux_schnell_engine"]
FULL = 1e-6  # a mask threshold ratio that marks every cell
EMPTY = 1e9  # one that marks none


@pytest.fixture(params=FAMILIES)
def flow_engine(request):
    return request.getfixturevalue(request.param)


@contextlib.contextmanager
def final_latents(engine):
    """The latents the engine decodes, per call, in its decode order."""
    seen: list[torch.Tensor] = []
    decode = engine.codec.decode

    def recording(latents):
        seen.append(latents.clone())
        return decode(latents)

    engine.codec.decode = recording
    try:
        yield seen
    finally:
        engine.codec.decode = decode


def test_the_families_are_read_from_the_model_index(sd3_engine, flux_engine, flux_schnell_engine):
    assert sd3_engine.family_name == "sd3"
    assert flux_engine.family_name == flux_schnell_engine.family_name == "flux"
    assert flux_engine.family.guidance_embeds and not flux_schnell_engine.family.guidance_embeds
    assert sd3_engine.family.max_sequence_length == 256 and flux_engine.family.max_sequence_length == 512
    assert sd3_engine.codec.shift_factor == pytest.approx(0.0609)
    assert flux_engine.codec.shift_factor == pytest.approx(0.1159)


@pytest.mark.parametrize("width, height, invert_guidance", [(64, 48, 1.0), (48, 32, 3.0)])
def test_a_full_mask_at_strength_one_equals_the_pipeline_from_the_inverted_latent(flow_engine, width, height,
                                                                                  invert_guidance):
    steps, guidance = 6, 4.0
    source, target, seed = "a bowl of fruits", "a basket of pears", 3
    image = photo(width, height, seed=1)
    settings = EditSettings(num_inference_steps=steps, inpaint_strength=1.0, guidance_scale=guidance,
                            invert_guidance_scale=invert_guidance, num_maps_per_mask=2, mask_thresholding_ratio=FULL)
    with final_latents(flow_engine) as seen:
        [result] = flow_engine.edit([image], [source], [target], [seed], settings)
    assert result.mask.all() and result.mask.shape == (height // 8, width // 8)
    pipeline = flow_pipeline(flow_engine)
    z = clean_latent(pipeline, image, seed)
    inverted = reverse_euler(pipeline, z, source, steps, 1.0, invert_guidance)
    expected = pipeline_from(pipeline, inverted[-1], target, source, steps, guidance)
    torch.testing.assert_close(seen[0], expected, rtol=1e-4, atol=1e-4)
    # Not vacuous: the edit moved from the picture's own latent by far more than the tolerance.
    assert (seen[0] - z).abs().mean() > 0.02


def test_an_empty_mask_returns_z_itself(flow_engine):
    image = photo(64, 48, seed=2)
    settings = EditSettings(num_inference_steps=6, inpaint_strength=0.7, guidance_scale=3.0, num_maps_per_mask=2,
                            mask_thresholding_ratio=EMPTY)
    with final_latents(flow_engine) as seen:
        [result] = flow_engine.edit([image], ["a cat"], ["a dog"], [7], settings)
    assert not result.mask.any()
    z = clean_latent(flow_pipeline(flow_engine), image, 7)
    assert torch.equal(seen[0], z)


def test_the_inversion_is_the_reference_walk_and_lower_strengths_are_its_prefix(flow_engine):
    image = photo(48, 48, seed=4)
    settings = [EditSettings(num_inference_steps=8, inpaint_strength=s, invert_guidance_scale=2.0, num_maps_per_mask=1)
                for s in (0.5, 1.0)]
    pipeline = flow_pipeline(flow_engine)
    z = clean_latent(pipeline, image, 5)
    walk = reverse_euler(pipeline, z, "a cat", 8, 1.0, 2.0)
    half = reverse_euler(pipeline, z, "a cat", 8, 0.5, 2.0)
    assert len(walk) == 8 and len(half) == 4
    for a, b in zip(half, walk):
        torch.testing.assert_close(a, b)
    # The engine's inversion for both strengths: one walk of 8 steps (guided: SD3 doubles the calls).
    before = flow_engine.stats.unet_samples
    flow_engine.edit([image] * 2, ["a cat"] * 2, ["a dog"] * 2, [5, 5], settings)
    spent = flow_engine.run_unet.samples_evaluated - before
    calls_per_step = 2 if flow_engine.family.classifier_free_guidance else 1
    mask = 2 * 1  # source and target, one map, shared by both rows
    edits = calls_per_step * (8 + 4)
    assert spent == mask + calls_per_step * 8 + edits


def _rows():
    """Rows of different settings, pictures of two latent sizes, K targets of one picture and candidates."""
    base = EditSettings(num_inference_steps=8, num_maps_per_mask=2, guidance_scale=4.0, invert_guidance_scale=1.0,
                        mask_thresholding_ratio=1.0)
    big, small = photo(64, 48, seed=0), photo(32, 48, seed=1)
    return [  # (image, source, target, seed, settings)
        (big, "a bowl of fruits", "a basket of pears", 1, base),
        (big, "a bowl of fruits", "a bowl of apples", 1, base),  # a second target of the same picture
        (big, "a bowl of fruits", "a basket of pears", 1, base.replace(inpaint_strength=0.5, guidance_scale=6.0,
                                                                          mask_thresholding_ratio=1.5)),  # candidate
        (big, "a bowl of fruits", "a basket of pears", 1, base.replace(inpaint_strength=0.6, guidance_scale=1.0)),
        (small, "a photo of a cat", "a photo of a dog", 2, base.replace(invert_guidance_scale=3.0,
                                                                         mask_encode_strength=0.7)),
        (small, "a photo of a cat", "a photo of a dog", 2, base.replace(num_inference_steps=6, num_maps_per_mask=3,
                                                                         paper_unconditional_inversion=True)),
        (big, "a cat", "a dog", 9, base.replace(paper_blend_timing=True, inpaint_strength=0.9)),
    ]


def test_rows_in_one_call_equal_each_row_edited_alone(flow_engine):
    rows = _rows()
    images, sources, targets, seeds, settings = (list(column) for column in zip(*rows))
    with final_latents(flow_engine) as together:
        batched = flow_engine.edit(images, sources, targets, seeds, settings)
    alone = []
    with final_latents(flow_engine) as each:
        for row in rows:
            [result] = flow_engine.edit([row[0]], [row[1]], [row[2]], [row[3]], row[4])
            alone.append(result)
    for i, (a, b) in enumerate(zip(batched, alone)):
        assert a.image.size == b.image.size and a.mask.shape == b.mask.shape
        assert (a.mask == b.mask).all(), f"row {i}: masks differ"
        difference = np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).mean()
        assert difference <= 0.5, f"row {i}: images differ by {difference:.3f}/255"
    assert len(each) == len(rows)
    assert any(result.mask.any() for result in batched) and not all(result.mask.all() for result in batched)
    # The call decodes one latent per distinct edit; each equals its row's alone (up to batched float sums).
    assert sum(len(latents) for latents in together) == len(rows)


def test_candidates_share_the_mask_and_the_inversion(flow_engine):
    """Candidates (thresholds, strengths) of one request: one mask prediction set, one inversion walk. FLUX.1-dev
    takes the guidance scale in every call, so candidates of different scales need masks of their own."""
    base = EditSettings(num_inference_steps=8, num_maps_per_mask=2, guidance_scale=4.0, invert_guidance_scale=1.0)
    candidates = [base, base.replace(mask_thresholding_ratio=2.0, inpaint_strength=0.5),
                  base.replace(mask_thresholding_ratio=4.0, inpaint_strength=0.7)]
    before = flow_engine.run_unet.samples_evaluated
    flow_engine.edit([photo(48, 48, 6)] * 3, ["a cat"] * 3, ["a dog"] * 3, [4] * 3, candidates)
    spent = flow_engine.run_unet.samples_evaluated - before
    cfg = 2 if flow_engine.family.classifier_free_guidance else 1
    assert spent == 2 * 2 + 6 + cfg * (6 + 4 + 5)
    scales = [base, base.replace(guidance_scale=7.0)]
    before = flow_engine.run_unet.samples_evaluated
    flow_engine.edit([photo(48, 48, 6)] * 2, ["a cat"] * 2, ["a dog"] * 2, [4] * 2, scales)
    spent = flow_engine.run_unet.samples_evaluated - before
    embedded = getattr(flow_engine.family, "guidance_embeds", False)
    takes_guidance = flow_engine.family.classifier_free_guidance or embedded
    assert spent == (2 if embedded else 1) * 2 * 2 + 6 + cfg * 6 * (2 if takes_guidance else 1)


def test_paper_blend_timing_changes_nothing_and_says_so(flow_engine, caplog):
    settings = EditSettings(num_inference_steps=6, num_maps_per_mask=2, mask_thresholding_ratio=1.0)
    image = photo(48, 32, seed=3)
    [plain] = flow_engine.edit([image], ["a cat"], ["a dog"], [2], settings)
    flow_engine._said_blend_timing = False  # said once per engine: this session's engine may have said it already
    with caplog.at_level(logging.INFO, logger="diffedit_batch.engine.engine"):
        [paper] = flow_engine.edit([image], ["a cat"], ["a dog"], [2], settings.replace(paper_blend_timing=True))
    assert plain.image.tobytes() == paper.image.tobytes()
    assert "paper_blend_timing changes nothing" in caplog.text


def test_pictures_are_rounded_down_to_sixteen_pixels(flow_engine):
    [result] = flow_engine.edit([photo(70, 50, seed=1)], ["a cat"], ["a dog"], [1],
                                EditSettings(num_inference_steps=4, num_maps_per_mask=1))
    assert result.image.size == (64, 48) and result.mask.shape == (6, 8)
    with pytest.raises(ValueError, match="row 0: .*16 px"):
        flow_engine.edit([photo(12, 40, seed=1)], ["a cat"], ["a dog"], [1])


def test_t5_max_sequence_length_and_truncation_per_encoder(tiny_sd3_dir, tiny_flux_dir):
    from diffedit_batch import DiffEditEngine

    long = " ".join(["fruits"] * 30)  # ~30 CLIP tokens (under 77), more T5 tokens than 16
    for folder, clip_tokens in ((tiny_sd3_dir, 77), (tiny_flux_dir, 0)):
        engine = DiffEditEngine.from_pretrained(str(folder), device="cpu", dtype=torch.float32, max_sequence_length=16)
        encoded = engine.prompts.encode(["a cat", long])
        assert encoded[("text", "a cat")].conditioning.tokens.shape[1] == clip_tokens + 16
        assert not encoded[("text", "a cat")].truncated and encoded[("text", long)].truncated
        [result] = engine.edit([photo(32, 32, 1)], [long], ["a dog"], [1], EditSettings(num_inference_steps=2,
                                                                                        num_maps_per_mask=1))
        assert result.truncated_prompts == ("source", "inversion")


def test_concept_embeddings_average_tokens_and_pooled(flow_engine):
    from diffedit_batch.engine.conditioning import Conditioning
    from diffedit_batch.recipe.concepts import concept_embedding

    captions = ["a bowl of fruits", "a photo of a bowl", "a photo of a bowl"]
    mean = concept_embedding(flow_engine, captions)
    each = [flow_engine.prompts.encode([c])[("text", c)].conditioning for c in captions]
    torch.testing.assert_close(mean.tokens, torch.cat([c.tokens for c in each]).mean(0, keepdim=True))
    torch.testing.assert_close(mean.pooled, torch.cat([c.pooled for c in each]).mean(0, keepdim=True))
    settings = EditSettings(num_inference_steps=4, num_maps_per_mask=1)
    [by_embedding] = flow_engine.edit([photo(32, 32, 1)], [concept_embedding(flow_engine, ["a bowl"])], ["a basket"],
                                      [1], settings)
    [by_text] = flow_engine.edit([photo(32, 32, 1)], ["a bowl"], ["a basket"], [1], settings)
    assert by_embedding.image.tobytes() == by_text.image.tobytes()
    with pytest.raises(ValueError, match="prompt embedding must be a Conditioning"):
        flow_engine.edit([photo(32, 32, 1)], [mean.tokens], ["a dog"], [1], settings)
    assert isinstance(mean, Conditioning) and mean.guidance is None


@pytest.mark.parametrize("index, found", [
    ({"_class_name": "FluxFillPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, "FLUX.1 Fill"),
    ({"_class_name": "FluxKontextPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, "Kontext"),
    ({"_class_name": "Flux2Pipeline", "transformer": ["diffusers", "Flux2Transformer2DModel"]}, "FLUX.2"),
    ({"_class_name": "QwenImagePipeline", "transformer": ["diffusers", "QwenImageTransformer2DModel"]}, "Qwen-Image"),
    ({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
      "vae": ["diffusers", "AutoencoderKL"]}, "also needs text_encoder, tokenizer, text_encoder_2, tokenizer_2"),
    ({"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
      **{name: ["x", "y"] for name in ("vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                                        "text_encoder_3", "tokenizer_3", "scheduler")}},
     "its transformer a FluxTransformer2DModel where StableDiffusion3Pipeline has a SD3Transformer2DModel"),
])
def test_other_transformer_models_are_named(index, found):
    from diffedit_batch.engine.model_index import UnsupportedModelError, family_of

    with pytest.raises(UnsupportedModelError, match=found):
        family_of(index, where="models/x")


def test_a_flux_transformer_that_takes_more_than_the_latents_is_refused(flux_engine):
    """FLUX.1 Fill/Canny/Depth transformers take the packed latents and a conditioning picture's channels."""
    from diffusers import FluxTransformer2DModel

    from diffedit_batch import DiffEditEngine
    from diffedit_batch.engine.model_index import UnsupportedModelError

    fill = FluxTransformer2DModel(patch_size=1, in_channels=384, out_channels=64, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    with pytest.raises(UnsupportedModelError, match="takes 384 channels, not the 64"):
        DiffEditEngine(transformer=fill, vae=flux_engine.vae, text_encoder=flux_engine.text_encoder,
                       tokenizer=flux_engine.tokenizer, text_encoder_2=flux_engine.text_encoder_2,
                       tokenizer_2=flux_engine.tokenizer_2, scheduler=flux_engine.scheduler)
