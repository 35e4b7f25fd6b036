"""Tiny random-weight SDXL, built and saved locally in the diffusers folder layout of
`stabilityai/stable-diffusion-xl-base-1.0`: unet/, vae/ (force_upcast, SDXL's scaling factor), text_encoder/
(`CLIPTextModel`), text_encoder_2/ (`CLIPTextModelWithProjection`), tokenizer/ and tokenizer_2/ (the second pads
with "!", as SDXL's does), scheduler/ (SDXL's Euler config) and model_index.json (`force_zeros_for_empty_prompt`).

The UNet takes SDXL's `text_time` conditioning: the pooled text embedding and six size ids, each id embedded in
`addition_time_embed_dim` channels, so its added-embedding input is 6 * 8 + the pooled projection's width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_sd import tiny_clip_text_encoder, tiny_vae
from .tokenizers import write_clip_tokenizer

# stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json (an Euler config: DiffEdit reads its
# training schedule and walks DDIM over it).
SDXL_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

TEXT_HIDDEN_SIZE = 32  # each encoder's; the UNet attends to both, concatenated (64)
POOLED_DIM = 32
TIME_EMBED_DIM = 8


def build_tiny_sdxl(folder: str | Path, seed: int = 0, *, unet_channels: tuple[int, ...] = (32, 64),
                    vae_channels: tuple[int, int, int, int] = (8, 16, 16, 16)) -> Path:
    """Build a tiny random SDXL and save it under `folder` (safetensors); returns the folder. Deterministic for a
    given seed and sizes."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    if len(unet_channels) < 2 or any(c <= 0 or c % 16 for c in unet_channels):
        raise ValueError(f"unet_channels must be at least two multiples of 16, got {unet_channels}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cross_attention_blocks = len(unet_channels) - 1
    unet = UNet2DConditionModel(
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * cross_attention_blocks,
        up_block_types=("CrossAttnUpBlock2D",) * cross_attention_blocks + ("UpBlock2D",),
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        attention_head_dim=tuple(c // 16 for c in unet_channels),
        transformer_layers_per_block=(1,) + (2,) * cross_attention_blocks,  # SDXL's deeper attention blocks
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + POOLED_DIM,
        norm_num_groups=8,
    )
    vae = tiny_vae(vae_channels, seed + 1, scaling_factor=0.13025, force_upcast=True)
    text_encoder = tiny_clip_text_encoder(TEXT_HIDDEN_SIZE, seed + 2)
    text_encoder_2 = tiny_clip_text_encoder(TEXT_HIDDEN_SIZE, seed + 3, projection_dim=POOLED_DIM)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    text_encoder_2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.42.1",
        "force_zeros_for_empty_prompt": True,
        "add_watermarker": None,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return folder
