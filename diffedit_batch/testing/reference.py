"""The deprecated diffusers DiffEdit pipeline, run row by row: the reference our engine must equal.

Used by the parity tests and the engine benchmark, never by the job. It wraps the engine's own modules, so
both sides run the same weights, with the schedulers the DiffEdit guide sets.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import PIL.Image
import torch

from diffedit_batch.engine.settings import EditSettings


def reference_pipeline(engine):
    """`StableDiffusionDiffEditPipeline` over `engine`'s unet, vae, text encoder and tokenizer (DDIM schedules)."""
    from diffusers import DDIMScheduler, StableDiffusionDiffEditPipeline

    from diffedit_batch.engine.schedule import inverse_scheduler_from

    pipe = StableDiffusionDiffEditPipeline(
        vae=engine.vae,
        text_encoder=engine.text_encoder,
        tokenizer=engine.tokenizer,
        unet=engine.unet,
        scheduler=DDIMScheduler.from_config(engine.scheduler.config),
        inverse_scheduler=inverse_scheduler_from(engine.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_edit(
    pipe,
    image: PIL.Image.Image,
    source: str,
    target: str,
    seed: int,
    settings: EditSettings,
    inversion_prompt: str | None = None,
    step_callback: Callable | None = None,
) -> tuple[PIL.Image.Image, np.ndarray]:
    """One row: generate_mask, invert and __call__, each with a fresh `torch.Generator().manual_seed(seed)`.

    Returns the edited image and the (h, w) mask. `step_callback(mask, inverted_latents)` may return a
    per-step callback for `__call__` (tests use it to move the blend timing).
    """
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
