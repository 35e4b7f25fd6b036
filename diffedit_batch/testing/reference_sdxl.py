"""The deprecated diffusers DiffEdit loops with SDXL conditioning put in: the reference our SDXL rows must equal.

No DiffEdit for SDXL exists in diffusers, so this is the port the engine is held to. The loops are the deprecated
`StableDiffusionDiffEditPipeline`'s own (`generate_mask`, `invert`, `__call__`), not a copy; two things change:
- every prompt and negative prompt is encoded by `StableDiffusionXLPipeline.encode_prompt`, called with the
  arguments the DiffEdit pipeline passes (so a missing negative prompt is zeros under
  `force_zeros_for_empty_prompt`, as in SDXL itself);
- the UNet is wrapped so that every sample gets its own pooled embedding as `text_embeds` (found by its per-token
  embedding, which `encode_prompt` produced alongside) and `time_ids = (H, W, 0, 0, H, W)` of the picture as
  processed (the latent size times the VAE's scale factor), as `StableDiffusionXLPipeline` passes them.
Schedulers are DDIM and DDIM inversion made from the folder's scheduler config, as for SD.
`tests/engine/test_sdxl.py` checks the port itself against `StableDiffusionXLPipeline`.
"""

from __future__ import annotations

import hashlib

import torch


def _key(tokens: torch.Tensor) -> str:
    return hashlib.blake2b(tokens.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(),
                           digest_size=16).hexdigest()


class _PooledLookupUNet(torch.nn.Module):
    """The SDXL UNet called as an SD UNet: the added conditioning of each sample is looked up by its tokens."""

    def __init__(self, unet, vae_scale_factor: int):
        super().__init__()
        self.unet = unet
        self.vae_scale_factor = vae_scale_factor
        self.pooled_of: dict[str, torch.Tensor] = {}

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def remember(self, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        for sample_tokens, sample_pooled in zip(tokens, pooled):
            self.pooled_of[_key(sample_tokens)] = sample_pooled

    def forward(self, sample, timestep, encoder_hidden_states, cross_attention_kwargs=None, return_dict=True):
        height, width = (side * self.vae_scale_factor for side in sample.shape[-2:])
        pooled = torch.stack([self.pooled_of[_key(tokens)] for tokens in encoder_hidden_states])
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=encoder_hidden_states.dtype)
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.repeat(len(sample), 1).to(sample.device)},
            cross_attention_kwargs=cross_attention_kwargs, return_dict=return_dict,
        )


def sdxl_pipeline(engine, scheduler=None):
    """`StableDiffusionXLPipeline` over an SDXL engine's components (no watermarker)."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=engine.vae, text_encoder=engine.text_encoder, text_encoder_2=engine.text_encoder_2,
        tokenizer=engine.tokenizer, tokenizer_2=engine.tokenizer_2, unet=engine.unet,
        scheduler=scheduler or DDIMScheduler.from_config(engine.scheduler.config),
        force_zeros_for_empty_prompt=engine.family.force_zeros_for_empty_prompt, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_sdxl_pipeline(engine):
    """The deprecated DiffEdit pipeline with SDXL conditioning, over an SDXL engine's components. Use it with
    `reference.reference_edit`, as the SD reference."""
    from diffusers import DDIMScheduler, StableDiffusionDiffEditPipeline

    from diffedit_batch.engine.schedule import inverse_scheduler_from

    encoder = sdxl_pipeline(engine)
    unet = _PooledLookupUNet(engine.unet, engine.vae_scale_factor)

    class SDXLDiffEditPipeline(StableDiffusionDiffEditPipeline):
        def encode_prompt(self, prompt, device, num_images_per_prompt, do_classifier_free_guidance,
                          negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None, lora_scale=None,
                          clip_skip=None):
            if prompt_embeds is not None or negative_prompt_embeds is not None:
                raise NotImplementedError("the SDXL reference encodes text prompts only")
            tokens, negative, pooled, negative_pooled = encoder.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                do_classifier_free_guidance=do_classifier_free_guidance, negative_prompt=negative_prompt,
            )
            unet.remember(tokens, pooled)
            if negative is not None:
                unet.remember(negative, negative_pooled)
            return tokens, negative

    pipe = SDXLDiffEditPipeline(
        vae=engine.vae, text_encoder=engine.text_encoder, tokenizer=engine.tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(engine.scheduler.config),
        inverse_scheduler=inverse_scheduler_from(engine.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
