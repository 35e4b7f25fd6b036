"""References for DiffEdit on flow models (SD3, FLUX.1), written from the issue's definition and diffusers' own
pipelines, apart from the engine's code: the model's pipeline (`StableDiffusion3Pipeline` / `FluxPipeline`) over
an engine's components, the clean latent z from the same seeded draw, and the reverse-Euler inversion walked with
the pipeline's own prompt encoding, scheduler and transformer call conventions.
"""

from __future__ import annotations

import numpy as np
import torch


def flow_pipeline(engine):
    """The model's own diffusers pipeline over `engine`'s components (a fresh scheduler from its config)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(engine.scheduler.config)
    common = dict(transformer=engine.transformer, scheduler=scheduler, vae=engine.vae,
                  text_encoder=engine.text_encoder, tokenizer=engine.tokenizer,
                  text_encoder_2=engine.text_encoder_2, tokenizer_2=engine.tokenizer_2)
    if engine.family_name == "sd3":
        pipeline = StableDiffusion3Pipeline(**common, text_encoder_3=engine.text_encoder_3,
                                            tokenizer_3=engine.tokenizer_3)
    else:
        pipeline = FluxPipeline(**common)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.no_grad()
def clean_latent(pipeline, image, seed: int) -> torch.Tensor:
    """z = (posterior sample - shift_factor) * scaling_factor, the posterior sampled with
    `torch.Generator().manual_seed(seed)` (the picture's sides must already be multiples of 16)."""
    vae = pipeline.vae
    pixels = pipeline.image_processor.preprocess(image).to(vae.device, vae.dtype)
    sample = vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(seed))
    return (sample - vae.config.shift_factor) * vae.config.scaling_factor


def set_pipeline_timesteps(pipeline, scheduler, steps: int, latent_hw: tuple[int, int]) -> None:
    """The scheduler set as the pipeline's `__call__` sets it for this latent size."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    height, width = latent_hw
    if hasattr(pipeline, "text_encoder_3"):
        scheduler.set_timesteps(steps)  # SD 3.5's config: no dynamic shifting
        return
    config = scheduler.config
    mu = calculate_shift((height // 2) * (width // 2), config.get("base_image_seq_len", 256),
                         config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                         config.get("max_shift", 1.15))
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)


@torch.no_grad()
def velocity(pipeline, latents: torch.Tensor, timestep: torch.Tensor, prompt: str, negative: str | None,
             guidance_scale: float) -> torch.Tensor:
    """The transformer's (guided) velocity at `latents` (1, C, h, w) as the pipeline computes it at `timestep`."""
    from diffusers import FluxPipeline

    if hasattr(pipeline, "text_encoder_3"):
        guided = negative is not None and guidance_scale > 1
        embeds, negative_embeds, pooled, negative_pooled = pipeline.encode_prompt(
            prompt, None, None, do_classifier_free_guidance=guided, negative_prompt=negative or "")
        if guided:
            embeds, pooled = torch.cat([negative_embeds, embeds]), torch.cat([negative_pooled, pooled])
        batch = torch.cat([latents] * 2) if guided else latents
        output = pipeline.transformer(hidden_states=batch, timestep=timestep.expand(batch.shape[0]),
                                      encoder_hidden_states=embeds, pooled_projections=pooled,
                                      return_dict=False)[0]
        if guided:
            unconditional, conditional = output.chunk(2)
            output = unconditional + guidance_scale * (conditional - unconditional)
        return output
    embeds, pooled, text_ids = pipeline.encode_prompt(prompt, None)
    _, channels, height, width = latents.shape
    packed = FluxPipeline._pack_latents(latents, 1, channels, height, width)
    image_ids = FluxPipeline._prepare_latent_image_ids(1, height // 2, width // 2, latents.device, latents.dtype)
    guidance = None
    if pipeline.transformer.config.guidance_embeds:
        guidance = torch.full([1], guidance_scale, dtype=torch.float32)
    output = pipeline.transformer(hidden_states=packed, timestep=timestep.expand(1).to(packed.dtype) / 1000,
                                  guidance=guidance, pooled_projections=pooled, encoder_hidden_states=embeds,
                                  txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
    factor = pipeline.vae_scale_factor
    return FluxPipeline._unpack_latents(output, height * factor, width * factor, factor)


@torch.no_grad()
def reverse_euler(pipeline, z: torch.Tensor, prompt: str, steps: int, strength: float,
                  guidance_scale: float) -> list[torch.Tensor]:
    """The issue's inversion: from z at sigma_N = 0 up to sigma_start (start = N - int(N * strength)),
    x_j = x_{j+1} + (sigma_j - sigma_{j+1}) v(x_{j+1}, sigma_{j+1}); every latent, lowest noise first. SD3 guides
    with the empty prompt as the negative when guidance_scale > 1; FLUX.1-dev embeds the scale."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    set_pipeline_timesteps(pipeline, scheduler, steps, tuple(z.shape[-2:]))
    sigmas, timesteps = scheduler.sigmas, torch.cat([scheduler.timesteps, torch.zeros(1)])
    start = steps - int(steps * strength)
    latents, walk = z, []
    for j in range(steps - 1, start - 1, -1):
        v = velocity(pipeline, latents, timesteps[j + 1], prompt, "", guidance_scale)
        latents = (latents.float() + (sigmas[j] - sigmas[j + 1]) * v).to(v.dtype)
        walk.append(latents)
    return walk


@torch.no_grad()
def pipeline_from(pipeline, latents: torch.Tensor, prompt: str, negative: str, steps: int,
                  guidance_scale: float) -> torch.Tensor:
    """The pipeline's own denoising from `latents` (1, C, h, w) at sigma_0: its output latent, unpacked."""
    from diffusers import FluxPipeline

    factor = pipeline.vae_scale_factor
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    if hasattr(pipeline, "text_encoder_3"):
        return pipeline(prompt=prompt, negative_prompt=negative, latents=latents, height=height, width=width,
                        num_inference_steps=steps, guidance_scale=guidance_scale, output_type="latent").images
    _, channels, h, w = latents.shape
    packed = FluxPipeline._pack_latents(latents, 1, channels, h, w)
    output = pipeline(prompt=prompt, latents=packed, height=height, width=width, num_inference_steps=steps,
                      guidance_scale=guidance_scale, output_type="latent").images
    return FluxPipeline._unpack_latents(output, height, width, factor)
