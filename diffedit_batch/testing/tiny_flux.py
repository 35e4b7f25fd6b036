"""Tiny random-weight FLUX.1, built and saved locally in the diffusers folder layout of
`black-forest-labs/FLUX.1-dev` (or, with `guidance_embeds=False`, FLUX.1-schnell): transformer/
(`FluxTransformer2DModel` over 2x2-packed latents, 64 input channels, with or without the guidance embedding), vae/
(16 latent channels, no quant convs, FLUX.1's scaling and shift factors), text_encoder/ (CLIP-L, `CLIPTextModel`:
its pooled output), text_encoder_2/ (`T5EncoderModel`: its tokens), tokenizer/ (byte-level CLIP BPE), tokenizer_2/
(a T5 Unigram tokenizer built here), scheduler/ (the repo's `FlowMatchEulerDiscreteScheduler` config: dev's
dynamic shifting from the packed sequence length, schnell's fixed shift 1) and model_index.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_sd import tiny_clip_text_encoder
from .tiny_sd3 import LATENT_CHANNELS, flow_vae, tiny_t5_encoder
from .tokenizers import write_clip_tokenizer, write_t5_tokenizer

# black-forest-labs/FLUX.1-dev's and FLUX.1-schnell's scheduler/scheduler_config.json
FLUX_DEV_SCHEDULER_CONFIG = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
    "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
    "use_dynamic_shifting": True,
}
FLUX_SCHNELL_SCHEDULER_CONFIG = {**FLUX_DEV_SCHEDULER_CONFIG, "shift": 1.0, "use_dynamic_shifting": False}
FLUX_VAE_FACTORS = {"scaling_factor": 0.3611, "shift_factor": 0.1159}

CLIP_HIDDEN_SIZE = 32
T5_WIDTH = 32


def build_tiny_flux(folder: str | Path, seed: int = 0, *, guidance_embeds: bool = True, num_layers: int = 1,
                    num_single_layers: int = 1) -> Path:
    """Build a tiny random FLUX.1 (dev-style with `guidance_embeds`, schnell-style without) and save it under
    `folder` (safetensors); returns the folder. Deterministic for a given seed and sizes."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_HIDDEN_SIZE, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8),
    )
    vae = flow_vae(seed + 1, **FLUX_VAE_FACTORS)
    text_encoder = tiny_clip_text_encoder(CLIP_HIDDEN_SIZE, seed + 2)
    text_encoder_2 = tiny_t5_encoder(T5_WIDTH, seed + 3)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    text_encoder_2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    write_t5_tokenizer(folder / "tokenizer_2")
    scheduler = FLUX_DEV_SCHEDULER_CONFIG if guidance_embeds else FLUX_SCHNELL_SCHEDULER_CONFIG
    FlowMatchEulerDiscreteScheduler.from_config(scheduler).save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "FluxPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return folder
