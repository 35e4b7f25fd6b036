"""Tiny random-weight Stable Diffusion, built and saved locally in the diffusers folder layout.

Tests and the offline example cannot download weights, so they load this model through the same
`from_pretrained` code as a real one. The components keep the real architecture's shape where it matters:
a VAE with 8x spatial downsampling and 4 latent channels, a cross-attention UNet, a CLIP text encoder with a
byte-level BPE tokenizer of 77 tokens, and Stable Diffusion 2.1's scheduler config (v-prediction).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tokenizers import MODEL_MAX_LENGTH, write_clip_tokenizer

# Stable Diffusion 2.1's scheduler config, so the tiny model exercises v-prediction like the real default.
SD21_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "timestep_spacing": "leading",
}

TEXT_HIDDEN_SIZE = 32


def build_tiny_stable_diffusion(
    folder: str | Path,
    seed: int = 0,
    *,
    unet_channels: tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    cross_attention_dim: int = TEXT_HIDDEN_SIZE,
    vae_channels: tuple[int, int, int, int] = (8, 16, 16, 16),
) -> Path:
    """Build a tiny random Stable Diffusion and save it under `folder` (model_index.json, unet/, vae/, ...).

    Weights are saved as safetensors. Returns the folder. Deterministic for a given seed and sizes.
    The defaults are the test suite's model; the size knobs make larger ones (e.g. for benchmarks):
    - unet_channels: the UNet's block widths (multiples of 16). The first block is plain, the others have
      cross-attention, with one attention head per 16 channels.
    - layers_per_block: resnet (and attention) layers per UNet block.
    - cross_attention_dim: the text encoder's hidden size, which the UNet attends to (a multiple of 4).
    - vae_channels: the VAE's four block widths (multiples of 8); four blocks keep the real 8x downsampling.
    """
    if len(unet_channels) < 2 or any(c <= 0 or c % 16 for c in unet_channels):
        raise ValueError(f"unet_channels must be at least two multiples of 16, got {unet_channels}")
    if len(vae_channels) != 4 or any(c <= 0 or c % 8 for c in vae_channels):
        raise ValueError(f"vae_channels must be four multiples of 8 (8x downsampling), got {vae_channels}")
    if cross_attention_dim <= 0 or cross_attention_dim % 4:
        raise ValueError(f"cross_attention_dim must be a positive multiple of 4, got {cross_attention_dim}")
    if layers_per_block < 1:
        raise ValueError(f"layers_per_block must be at least 1, got {layers_per_block}")
    from diffusers import DDIMScheduler, UNet2DConditionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cross_attention_blocks = len(unet_channels) - 1
    unet = UNet2DConditionModel(
        block_out_channels=tuple(unet_channels),
        layers_per_block=layers_per_block,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * cross_attention_blocks,
        up_block_types=("CrossAttnUpBlock2D",) * cross_attention_blocks + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        # diffusers' legacy name: this is the number of heads per block.
        attention_head_dim=tuple(c // 16 for c in unet_channels),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    vae = tiny_vae(vae_channels, seed + 1)
    text_encoder = tiny_clip_text_encoder(cross_attention_dim, seed + 2)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    DDIMScheduler.from_config(SD21_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return folder


def tiny_vae(channels: tuple[int, int, int, int], seed: int, **config):
    """A random `AutoencoderKL` with four blocks, i.e. the real 8x latent downsampling and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=tuple(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **config,
    )


def tiny_clip_text_encoder(hidden_size: int, seed: int, projection_dim: int | None = None):
    """A random CLIP text encoder over the tiny tokenizer's ids; with `projection_dim` a
    `CLIPTextModelWithProjection` (SDXL's second encoder), else a `CLIPTextModel`."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=MODEL_MAX_LENGTH,
        **({} if projection_dim is None else {"projection_dim": projection_dim}),
    )
    return CLIPTextModel(config) if projection_dim is None else CLIPTextModelWithProjection(config)
