"""Model families: what Stable Diffusion 1.x/2.x, SDXL, SD3 and FLUX.1 add to the one DiffEdit loop.

A family owns these things and nothing else (ComfyUI keeps one sampler for every model in the same way, a
`BaseModel` subclass per family adding its extra conditions):
- text conditioning: how a prompt becomes a `Conditioning` (diffusers' `encode_prompt` of that family), and what the
  unconditional side of guidance is when no negative prompt is given;
- the denoiser call's extra inputs (SDXL: pooled text embeddings and size micro-conditioning; SD3: pooled
  projections; FLUX.1: packed latents, image and text ids, `t / 1000`, the guidance embedding);
- how guidance is given: classifier-free (two model calls, SD/SDXL/SD3) or as a model input (FLUX.1-dev);
- its sampler (`samplers`: DDIM for SD/SDXL, rectified-flow Euler on the schedule its pipeline sets for SD3/FLUX.1)
  and the picture sizes its pipeline accepts;
- the VAE's precision (SDXL's VAE overflows in float16 and is run in float32 where its config asks).
Which family a model folder holds is read from its `model_index.json` (`model_index.family_of`).
"""

from __future__ import annotations

import torch

from .conditioning import Conditioning

from .denoiser_runner import call_unet
from .model_index import FAMILIES, FAMILY_NAMES, FLUX, SD, SD3, SDXL, UnsupportedModelError, family_of
from .samplers import DDIMSampler, FlowEulerSampler

__all__ = ["FAMILIES", "FAMILY_NAMES", "FLUX", "FluxFamily", "SD", "SD3", "SDXL", "StableDiffusion3Family",
           "StableDiffusionFamily", "StableDiffusionXLFamily", "UnsupportedModelError", "family_of", "flow_family",
           "unet_family"]


class StableDiffusionFamily:
    """Stable Diffusion 1.x and 2.x: one CLIP text encoder, per-token conditioning only."""

    name = SD
    classifier_free_guidance = True  # guidance is two model calls (conditional, unconditional) mixed by the scale
    call_model = staticmethod(call_unet)

    def __init__(self, text_encoder, tokenizer):
        self.text_encoders = (text_encoder,)
        self.tokenizers = (tokenizer,)

    @property
    def text_encoder(self):
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]

    @property
    def token_dim(self) -> int:
        return sum(encoder.config.hidden_size for encoder in self.text_encoders)

    @property
    def pooled_dim(self) -> int | None:
        return None

    @property
    def max_length(self) -> int:
        return self.tokenizer.model_max_length

    def _tokens(self, tokenizer, texts: list[str]):
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt")

    def token_limits(self) -> list[tuple]:
        """(tokenizer, the most tokens its encoder reads) for each text encoder."""
        return [(tokenizer, tokenizer.model_max_length) for tokenizer in self.tokenizers]

    def truncated(self, texts: list[str]) -> list[bool]:
        """Which texts are longer than some encoder's limit and get cut there (the pipelines warn and cut them too)."""
        flags = [False] * len(texts)
        for tokenizer, limit in self.token_limits():
            # Counted in chunks with no tensors: transformers would warn about "indexing errors" on long texts.
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False).input_ids]
            flags = [flag or length > limit for flag, length in zip(flags, lengths)]
        return flags

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """As `StableDiffusionPipeline.encode_prompt`: max-length padding, truncation, the last hidden state."""
        tokens = self._tokens(self.tokenizer, texts)
        attention_mask = None
        encoder_device = self.text_encoder.device  # the engine's, or model.text_encoder_device
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(encoder_device)
        output = self.text_encoder(tokens.input_ids.to(encoder_device), attention_mask=attention_mask)
        return Conditioning(output[0].to(device, dtype))

    def unconditional(self, empty_prompt: Conditioning) -> Conditioning:
        """The unconditional side of classifier-free guidance when no negative prompt is given: the empty prompt."""
        return empty_prompt

    def stage_conditioning(self, conditioning: Conditioning, guidance_scale: float) -> Conditioning:
        """The conditioning of a stage guided at `guidance_scale`: unchanged where guidance is classifier-free (the
        engine mixes two calls); a guidance-distilled model takes the scale as an input."""
        return conditioning

    def guidance_key(self, guidance_scale: float):
        """What a stage's model calls depend on of its guidance scale when it is a model input (else None): rows
        that differ only there share the calls."""
        return None

    def unet_inputs(self, latents: torch.Tensor, conditioning: Conditioning) -> dict:
        """The UNet's keyword inputs besides the latents and the timestep."""
        return {"encoder_hidden_states": conditioning.tokens}

    def make_sampler(self, scheduler, inverse_scheduler, device):
        """DDIM over the model's training schedule (`scheduler`, made a DDIMScheduler from its config if it is
        another, e.g. SDXL's Euler), and DDIM inversion (default: from the same config), as the DiffEdit guide sets
        them."""
        from diffusers import DDIMScheduler

        from .schedule import inverse_scheduler_from

        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        if inverse_scheduler is None:
            inverse_scheduler = inverse_scheduler_from(scheduler.config)
        return DDIMSampler(scheduler, inverse_scheduler, device)

    def pixel_multiple(self, vae_scale_factor: int) -> int:
        """Picture sides are rounded down to a multiple of this (as the family's pipeline does)."""
        return vae_scale_factor

    @staticmethod
    def vae_dtype(dtype: torch.dtype, force_upcast: bool) -> torch.dtype:
        """The VAE's precision: the model's (StableDiffusionPipeline never upcasts its VAE)."""
        return dtype

    def check_embedding(self, embedding: Conditioning) -> Conditioning:
        """A precomputed prompt as one sample; ValueError naming the expected shape."""
        tokens = embedding.tokens
        if tokens.ndim == 2:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 3 or tokens.shape[0] != 1 or tokens.shape[-1] != self.token_dim:
            raise ValueError(
                f"a prompt embedding must have shape (seq_len, {self.token_dim}) or (1, seq_len, {self.token_dim}), "
                f"got {tuple(embedding.tokens.shape)}"
            )
        if embedding.pooled is not None:
            raise ValueError(f"{FAMILY_NAMES[self.name]} takes no pooled prompt embedding")
        return Conditioning(tokens)


class StableDiffusionXLFamily(StableDiffusionFamily):
    """SDXL base: two CLIP text encoders (penultimate hidden states, concatenated), the second's pooled projection,
    and size micro-conditioning `time_ids = (H, W, 0, 0, H, W)` of the picture as processed."""

    name = SDXL
    label = "SDXL"

    def __init__(self, text_encoder, tokenizer, text_encoder_2, tokenizer_2, *, vae_scale_factor: int,
                 force_zeros_for_empty_prompt: bool = True):
        self.text_encoders = (text_encoder, text_encoder_2)
        self.tokenizers = (tokenizer, tokenizer_2)
        self.vae_scale_factor = vae_scale_factor
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        self._time_ids: dict[tuple, torch.Tensor] = {}

    @property
    def pooled_dim(self) -> int:
        return self.text_encoders[1].config.projection_dim

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """As `StableDiffusionXLPipeline.encode_prompt` (no clip_skip): each encoder's penultimate hidden state,
        concatenated, and the pooled output of the encoder that has one (the second)."""
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            tokens = self._tokens(tokenizer, texts)
            output = encoder(tokens.input_ids.to(encoder.device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:
                pooled = output[0]
            hidden.append(output.hidden_states[-2].to(device))
        if pooled is None:
            raise UnsupportedModelError("neither SDXL text encoder returns a pooled embedding (text_encoder_2 must be "
                                        "a CLIPTextModelWithProjection)")
        return Conditioning(torch.cat(hidden, dim=-1).to(device, dtype), pooled.to(device, dtype))

    def unconditional(self, empty_prompt: Conditioning) -> Conditioning:
        """Zeros (tokens and pooled) under `force_zeros_for_empty_prompt`, as SDXL's `encode_prompt` makes a missing
        negative prompt; else the empty prompt."""
        return empty_prompt.zeros_like() if self.force_zeros_for_empty_prompt else empty_prompt

    def unet_inputs(self, latents: torch.Tensor, conditioning: Conditioning) -> dict:
        batch, _, height, width = latents.shape
        key = (batch, height, width, conditioning.tokens.dtype, conditioning.tokens.device)
        if key not in self._time_ids:  # made once per shape, so a step adds no host-to-device copy
            pixels = (height * self.vae_scale_factor, width * self.vae_scale_factor)
            row = torch.tensor([[*pixels, 0, 0, *pixels]], dtype=conditioning.tokens.dtype)
            self._time_ids[key] = row.expand(batch, -1).contiguous().to(conditioning.tokens.device)
        return {
            "encoder_hidden_states": conditioning.tokens,
            "added_cond_kwargs": {"text_embeds": conditioning.pooled, "time_ids": self._time_ids[key]},
        }

    @staticmethod
    def vae_dtype(dtype: torch.dtype, force_upcast: bool) -> torch.dtype:
        """float32 for a float16 model whose VAE config asks for it (`force_upcast`, SDXL's VAE overflows in
        float16), as `StableDiffusionXLPipeline` upcasts it; else the model's."""
        if dtype == torch.float16 and force_upcast:
            return torch.float32
        return dtype

    def check_embedding(self, embedding: Conditioning) -> Conditioning:
        tokens, pooled = embedding.tokens, embedding.pooled
        if tokens.ndim == 2:
            tokens = tokens.unsqueeze(0)
        if pooled is not None and pooled.ndim == 1:
            pooled = pooled.unsqueeze(0)
        if (tokens.ndim != 3 or tokens.shape[0] != 1 or tokens.shape[-1] != self.token_dim or pooled is None
                or tuple(pooled.shape) != (1, self.pooled_dim)):
            raise ValueError(
                f"an {self.label} prompt embedding must be a Conditioning of tokens (1, seq_len, {self.token_dim}) and pooled "
                f"(1, {self.pooled_dim}), got tokens {tuple(embedding.tokens.shape)} and pooled "
                f"{None if embedding.pooled is None else tuple(embedding.pooled.shape)}"
            )
        return Conditioning(tokens, pooled)


def _flow_scheduler(scheduler):
    """A `FlowMatchEulerDiscreteScheduler` (the model's own, or one made from its config)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return scheduler
    return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)


def _encode_t5(tokenizer, encoder, texts: list[str], max_sequence_length: int) -> torch.Tensor:
    """As the SD3 and FLUX.1 pipelines' `_get_t5_prompt_embeds`: max-length padding to `max_sequence_length`,
    truncation, the last hidden state in the encoder's dtype."""
    ids = tokenizer(texts, padding="max_length", max_length=max_sequence_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt").input_ids
    return encoder(ids.to(encoder.device), output_hidden_states=False)[0].to(dtype=encoder.dtype)


class StableDiffusion3Family(StableDiffusionFamily):
    """SD 3 / 3.5 (medium, large): CLIP-L and CLIP-G (penultimate hidden states concatenated, zero-padded to T5's
    width) followed by T5's tokens, the two CLIPs' pooled projections concatenated; a joint-attention transformer
    (`SD3Transformer2DModel`) predicting the flow velocity, sampled by rectified-flow Euler with the scheduler's
    shift, classifier-free guidance with the empty prompt encoded as `StableDiffusion3Pipeline.encode_prompt` does
    for the unconditional side."""

    name = SD3
    label = "SD3"

    def __init__(self, text_encoder, tokenizer, text_encoder_2, tokenizer_2, text_encoder_3, tokenizer_3, *,
                 patch_size: int, max_sequence_length: int = 256):
        self.text_encoders = (text_encoder, text_encoder_2, text_encoder_3)
        self.tokenizers = (tokenizer, tokenizer_2, tokenizer_3)
        self.patch_size = patch_size
        self.max_sequence_length = max_sequence_length

    @property
    def token_dim(self) -> int:
        return self.text_encoders[2].config.d_model

    @property
    def pooled_dim(self) -> int:
        return sum(encoder.config.projection_dim for encoder in self.text_encoders[:2])

    @property
    def max_length(self) -> int:
        return self.tokenizer.model_max_length + self.max_sequence_length

    def token_limits(self) -> list[tuple]:
        clip = self.tokenizer.model_max_length  # the pipeline cuts both CLIP prompts at the first tokenizer's length
        return [(self.tokenizers[0], clip), (self.tokenizers[1], clip), (self.tokenizers[2], self.max_sequence_length)]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """As `StableDiffusion3Pipeline.encode_prompt` (no clip_skip)."""
        clip_length = self.tokenizer.model_max_length
        hidden, pooled = [], []
        for tokenizer, encoder in zip(self.tokenizers[:2], self.text_encoders[:2]):
            ids = tokenizer(texts, padding="max_length", max_length=clip_length, truncation=True,
                            return_tensors="pt").input_ids
            output = encoder(ids.to(encoder.device), output_hidden_states=True)
            pooled.append(output[0].to(device))
            hidden.append(output.hidden_states[-2].to(device, self.text_encoders[0].dtype))
        t5 = _encode_t5(self.tokenizers[2], self.text_encoders[2], texts, self.max_sequence_length).to(device)
        clip = torch.cat(hidden, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        tokens = torch.cat([clip, t5], dim=-2)
        return Conditioning(tokens.to(device, dtype), torch.cat(pooled, dim=-1).to(device, dtype))

    check_embedding = StableDiffusionXLFamily.check_embedding

    def unet_inputs(self, latents: torch.Tensor, conditioning: Conditioning) -> dict:
        return {"encoder_hidden_states": conditioning.tokens, "pooled_projections": conditioning.pooled}

    @staticmethod
    def call_model(transformer, latents: torch.Tensor, timestep: torch.Tensor, inputs: dict) -> torch.Tensor:
        """As `StableDiffusion3Pipeline.__call__`: the scheduler's timestep, one per sample."""
        return transformer(hidden_states=latents, timestep=timestep.expand(latents.shape[0]), **inputs,
                           return_dict=False)[0]

    def set_timesteps(self, scheduler, num_inference_steps: int, latent_shape: tuple) -> None:
        """As `StableDiffusion3Pipeline.__call__`: `set_timesteps(N)`, with `mu` from the patch count only where
        the scheduler shifts dynamically (SD 3.5's configs do not: their `shift` is fixed)."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        options = {}
        if scheduler.config.get("use_dynamic_shifting", None):
            height, width = latent_shape[-2:]
            sequence = (height // self.patch_size) * (width // self.patch_size)
            options["mu"] = calculate_shift(
                sequence, scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.16))
        scheduler.set_timesteps(num_inference_steps, **options)

    def make_sampler(self, scheduler, inverse_scheduler, device):
        return FlowEulerSampler(_flow_scheduler(scheduler), self.set_timesteps, device)

    def pixel_multiple(self, vae_scale_factor: int) -> int:
        """The VAE factor times the transformer's patch size (16 px on the real models), as the pipeline checks."""
        return vae_scale_factor * self.patch_size


class FluxFamily(StableDiffusionFamily):
    """FLUX.1-dev / -schnell: CLIP's pooled output and T5's tokens; latents packed into 2x2 patches with their
    `img_ids` and zero `txt_ids`; the timestep as `t / 1000`; sigmas `linspace(1, 1/N, N)` shifted by `mu` from the
    packed sequence length. No classifier-free guidance: FLUX.1-dev takes each stage's scale in its guidance
    embedding (`guidance_embeds`), FLUX.1-schnell has no guidance input at all."""

    name = FLUX
    label = "FLUX.1"
    classifier_free_guidance = False

    def __init__(self, text_encoder, tokenizer, text_encoder_2, tokenizer_2, *, guidance_embeds: bool,
                 vae_scale_factor: int, max_sequence_length: int = 512):
        self.text_encoders = (text_encoder, text_encoder_2)
        self.tokenizers = (tokenizer, tokenizer_2)
        self.guidance_embeds = guidance_embeds
        self.vae_scale_factor = vae_scale_factor
        self.max_sequence_length = max_sequence_length
        self._ids: dict[tuple, torch.Tensor] = {}

    @property
    def token_dim(self) -> int:
        return self.text_encoders[1].config.d_model

    @property
    def pooled_dim(self) -> int:
        return self.text_encoders[0].config.hidden_size

    @property
    def max_length(self) -> int:
        return self.max_sequence_length

    def token_limits(self) -> list[tuple]:
        return [(self.tokenizers[0], self.tokenizers[0].model_max_length),
                (self.tokenizers[1], self.max_sequence_length)]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """As `FluxPipeline.encode_prompt`: CLIP's pooled output, T5's last hidden state."""
        tokenizer, encoder = self.tokenizers[0], self.text_encoders[0]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        pooled = encoder(ids.to(encoder.device), output_hidden_states=False).pooler_output.to(dtype=encoder.dtype)
        tokens = _encode_t5(self.tokenizers[1], self.text_encoders[1], texts, self.max_sequence_length)
        return Conditioning(tokens.to(device, dtype), pooled.to(device, dtype))

    check_embedding = StableDiffusionXLFamily.check_embedding

    def stage_conditioning(self, conditioning: Conditioning, guidance_scale: float) -> Conditioning:
        return conditioning.with_guidance(guidance_scale) if self.guidance_embeds else conditioning

    def guidance_key(self, guidance_scale: float):
        return float(guidance_scale) if self.guidance_embeds else None

    def _cached(self, key: tuple, make) -> torch.Tensor:
        if key not in self._ids:  # made once per shape, so a step adds no host-to-device copy
            self._ids[key] = make()
        return self._ids[key]

    def unet_inputs(self, latents: torch.Tensor, conditioning: Conditioning) -> dict:
        from diffusers import FluxPipeline

        _, _, height, width = latents.shape
        tokens = conditioning.tokens
        image_ids = self._cached(("img", height, width, tokens.dtype, tokens.device),
                                 lambda: FluxPipeline._prepare_latent_image_ids(None, height // 2, width // 2,
                                                                                 tokens.device, tokens.dtype))
        text_ids = self._cached(("txt", tokens.shape[1], tokens.dtype, tokens.device),
                                lambda: torch.zeros(tokens.shape[1], 3, device=tokens.device, dtype=tokens.dtype))
        if self.guidance_embeds and conditioning.guidance is None:
            raise ValueError("FLUX.1-dev takes a guidance scale in every call (the engine sets it per stage)")
        return {"encoder_hidden_states": tokens, "pooled_projections": conditioning.pooled,
                "guidance": conditioning.guidance if self.guidance_embeds else None,
                "txt_ids": text_ids, "img_ids": image_ids}

    def call_model(self, transformer, latents: torch.Tensor, timestep: torch.Tensor, inputs: dict) -> torch.Tensor:
        """As `FluxPipeline.__call__`: latents packed into 2x2 patches, the timestep in the latents' dtype over 1000;
        the prediction unpacked to (B, C, h, w)."""
        from diffusers import FluxPipeline

        batch, channels, height, width = latents.shape
        packed = FluxPipeline._pack_latents(latents, batch, channels, height, width)
        timestep = timestep.expand(batch).to(packed.dtype)
        output = transformer(hidden_states=packed, timestep=timestep / 1000, **inputs, return_dict=False)[0]
        factor = self.vae_scale_factor
        return FluxPipeline._unpack_latents(output, height * factor, width * factor, factor)

    def set_timesteps(self, scheduler, num_inference_steps: int, latent_shape: tuple) -> None:
        """As `FluxPipeline.__call__`: sigmas `linspace(1, 1/N, N)` (none where the config says `use_flow_sigmas`),
        `mu` from the packed sequence length and the scheduler config's shifts."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        height, width = latent_shape[-2:]
        mu = calculate_shift(
            (height // 2) * (width // 2), scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15))
        if sigmas is None:
            scheduler.set_timesteps(num_inference_steps, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)

    def make_sampler(self, scheduler, inverse_scheduler, device):
        return FlowEulerSampler(_flow_scheduler(scheduler), self.set_timesteps, device)

    def pixel_multiple(self, vae_scale_factor: int) -> int:
        """Twice the VAE factor (the 2x2 packing), as FluxPipeline's image processor rounds (16 px on FLUX.1)."""
        return 2 * vae_scale_factor


def unet_family(unet, text_encoder, tokenizer, text_encoder_2=None, tokenizer_2=None, *, vae_scale_factor: int,
                force_zeros_for_empty_prompt: bool = True) -> StableDiffusionFamily:
    """SD 1.x/2.x (one text encoder) or SDXL (two, and a UNet taking SDXL's `text_time` conditioning)."""
    takes_sdxl_conditioning = getattr(unet.config, "addition_embed_type", None) == "text_time"
    if (text_encoder_2 is None) != (tokenizer_2 is None):
        raise ValueError("SDXL needs both text_encoder_2 and tokenizer_2")
    if text_encoder_2 is None:
        if takes_sdxl_conditioning:
            raise UnsupportedModelError("the UNet takes SDXL's text_time conditioning, but no text_encoder_2 and "
                                        "tokenizer_2 were given")
        return StableDiffusionFamily(text_encoder, tokenizer)
    if not takes_sdxl_conditioning:
        raise UnsupportedModelError(
            "text_encoder_2 was given, but the UNet does not take SDXL's text_time conditioning "
            f"(addition_embed_type {getattr(unet.config, 'addition_embed_type', None)!r})")
    return StableDiffusionXLFamily(text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                                   vae_scale_factor=vae_scale_factor,
                                   force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)


def flow_family(transformer, text_encoder, tokenizer, text_encoder_2, tokenizer_2, text_encoder_3=None,
                tokenizer_3=None, *, vae_scale_factor: int, latent_channels: int,
                max_sequence_length: int | None = None):
    """The family of a flow transformer (`SD3Transformer2DModel` or `FluxTransformer2DModel`) with its text
    encoders; UnsupportedModelError for another transformer, a missing component, or a transformer whose input is
    not the VAE's latents alone (FLUX.1 Fill/Canny/Depth take more channels)."""
    kind = type(getattr(transformer, "_orig_mod", transformer)).__name__
    config = transformer.config
    if kind == "SD3Transformer2DModel":
        missing = [name for name, part in (("text_encoder_2", text_encoder_2), ("tokenizer_2", tokenizer_2),
                                           ("text_encoder_3", text_encoder_3), ("tokenizer_3", tokenizer_3))
                   if part is None]
        if missing:
            raise UnsupportedModelError(f"an SD3 transformer needs {', '.join(missing)} too")
        if config.in_channels != latent_channels:
            raise UnsupportedModelError(f"the SD3 transformer takes {config.in_channels} channels, the VAE makes "
                                        f"{latent_channels}; DiffEdit needs a text-to-image transformer")
        return StableDiffusion3Family(text_encoder, tokenizer, text_encoder_2, tokenizer_2, text_encoder_3,
                                      tokenizer_3, patch_size=config.patch_size,
                                      max_sequence_length=max_sequence_length or 256)
    if kind == "FluxTransformer2DModel":
        if text_encoder_2 is None or tokenizer_2 is None:
            raise UnsupportedModelError("a FLUX.1 transformer needs text_encoder_2 (T5) and tokenizer_2 too")
        if config.in_channels != 4 * latent_channels:
            raise UnsupportedModelError(
                f"the FLUX.1 transformer takes {config.in_channels} channels, not the {4 * latent_channels} of the "
                f"VAE's packed latents (FLUX.1 Fill, Canny or Depth?); DiffEdit needs FLUX.1-dev or -schnell")
        if max_sequence_length is not None and max_sequence_length > 512:
            raise ValueError(f"FLUX.1's max_sequence_length is at most 512, got {max_sequence_length}")
        return FluxFamily(text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                          guidance_embeds=bool(config.guidance_embeds), vae_scale_factor=vae_scale_factor,
                          max_sequence_length=max_sequence_length or 512)
    raise UnsupportedModelError(f"a {kind} is not a transformer diffedit-batch drives (SD3Transformer2DModel, "
                                f"FluxTransformer2DModel)")
