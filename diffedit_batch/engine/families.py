"""Model families: what Stable Diffusion 1.x/2.x and SDXL add to the one DiffEdit loop.

A family owns three things and nothing else (ComfyUI keeps one sampler for every model in the same way, a
`BaseModel` subclass per family adding its extra conditions):
- text conditioning: how a prompt becomes a `Conditioning` (diffusers' `encode_prompt` of that family), and what the
  unconditional side of guidance is when no negative prompt is given;
- the UNet call's extra inputs (SDXL: pooled text embeddings and size micro-conditioning);
- the VAE's precision (SDXL's VAE overflows in float16 and is run in float32 where its config asks).
Which family a model folder holds is read from its `model_index.json` (`model_index.family_of`).
"""

from __future__ import annotations

import torch

from .conditioning import Conditioning

from .model_index import FAMILIES, FAMILY_NAMES, SD, SDXL, UnsupportedModelError, family_of

__all__ = ["FAMILIES", "FAMILY_NAMES", "SD", "SDXL", "StableDiffusionFamily", "StableDiffusionXLFamily",
           "UnsupportedModelError", "family_of"]


class StableDiffusionFamily:
    """Stable Diffusion 1.x and 2.x: one CLIP text encoder, per-token conditioning only."""

    name = SD

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

    def truncated(self, texts: list[str]) -> list[bool]:
        """Which texts are longer than a tokenizer's context and get cut (the pipelines warn and cut them too)."""
        flags = [False] * len(texts)
        for tokenizer in self.tokenizers:
            # Counted in chunks with no tensors: transformers would warn about "indexing errors" on long texts.
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False).input_ids]
            flags = [flag or length > tokenizer.model_max_length for flag, length in zip(flags, lengths)]
        return flags

    @torch.no_grad()
    def encode_texts(self, texts: list[str], device: torch.device, dtype: torch.dtype) -> Conditioning:
        """As `StableDiffusionPipeline.encode_prompt`: max-length padding, truncation, the last hidden state."""
        tokens = self._tokens(self.tokenizer, texts)
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(device)
        output = self.text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)
        return Conditioning(output[0].to(device, dtype))

    def unconditional(self, empty_prompt: Conditioning) -> Conditioning:
        """The unconditional side of classifier-free guidance when no negative prompt is given: the empty prompt."""
        return empty_prompt

    def unet_inputs(self, latents: torch.Tensor, conditioning: Conditioning) -> dict:
        """The UNet's keyword inputs besides the latents and the timestep."""
        return {"encoder_hidden_states": conditioning.tokens}

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
            output = encoder(tokens.input_ids.to(device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:
                pooled = output[0]
            hidden.append(output.hidden_states[-2])
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
                f"an SDXL prompt embedding must be a Conditioning of tokens (1, seq_len, {self.token_dim}) and pooled "
                f"(1, {self.pooled_dim}), got tokens {tuple(embedding.tokens.shape)} and pooled "
                f"{None if embedding.pooled is None else tuple(embedding.pooled.shape)}"
            )
        return Conditioning(tokens, pooled)
