from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    from diffedit_batch import DiffEditEngine

    return DiffEditEngine.from_pretrained(str(tiny_model_dir), device="cpu", dtype=torch.float32, max_unet_batch=64)


@pytest.fixture(scope="session")
def reference(engine):
    """The deprecated diffusers pipeline over the same components, scheduled as the DiffEdit guide sets it."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionDiffEditPipeline

    pipe = StableDiffusionDiffEditPipeline(
        vae=engine.vae,
        text_encoder=engine.text_encoder,
        tokenizer=engine.tokenizer,
        unet=engine.unet,
        scheduler=DDIMScheduler.from_config(engine.scheduler.config),
        inverse_scheduler=DDIMInverseScheduler.from_config(engine.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def photo(width: int, height: int, seed: int) -> PIL.Image.Image:
    """A smooth synthetic picture (gradients and a disc), so resizing behaves like on a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, 0.25 * min(width, height)
    disc = ((x - cx) ** 2 + (y - cy) ** 2 < r**2).astype(np.float32)
    channels = [
        (x / width) * rng.uniform(80, 255) + disc * rng.uniform(-120, 120),
        (y / height) * rng.uniform(80, 255) + disc * rng.uniform(-120, 120),
        np.full_like(x, rng.uniform(0, 255)) - disc * rng.uniform(0, 100),
    ]
    return PIL.Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def reference_edit(pipe, image, source, target, seed, settings, inversion_prompt=None, step_callback=None):
    """Row-by-row reference: fresh generators for generate_mask, invert and __call__."""
    generator = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    mask = pipe.generate_mask(
        image=image,
        source_prompt=source,
        target_prompt=target,
        generator=generator(),
        num_maps_per_mask=settings.num_maps_per_mask,
        mask_encode_strength=settings.mask_encode_strength,
        mask_thresholding_ratio=settings.mask_thresholding_ratio,
        num_inference_steps=settings.num_inference_steps,
        # The reference's mask crashes without guidance (it unpacks a missing negative embedding); with any
        # guidance > 1 its mask is the same, so an unguided edit is compared against a mask made at 7.5.
        guidance_scale=settings.guidance_scale if settings.guidance_scale > 1 else 7.5,
    )
    invert_prompt = inversion_prompt if inversion_prompt is not None else source
    invert_guidance = settings.invert_guidance_scale
    if settings.paper_unconditional_inversion:
        invert_prompt, invert_guidance = "", 1.0
    latents = pipe.invert(
        prompt=invert_prompt,
        image=image,
        generator=generator(),
        num_inference_steps=settings.num_inference_steps,
        inpaint_strength=settings.inpaint_strength,
        guidance_scale=invert_guidance,
    ).latents
    extra = {}
    if step_callback is not None:
        extra = {"callback": step_callback(mask, latents), "callback_steps": 1}
    edited = pipe(
        prompt=target,
        negative_prompt=source,
        mask_image=mask,
        image_latents=latents,
        generator=generator(),
        num_inference_steps=settings.num_inference_steps,
        inpaint_strength=settings.inpaint_strength,
        guidance_scale=settings.guidance_scale,
        **extra,
    ).images[0]
    return edited, mask[0]
