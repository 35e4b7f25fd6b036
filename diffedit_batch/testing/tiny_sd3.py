"""Tiny random-weight Stable Diffusion 3.5, built and saved locally in the diffusers folder layout of
`stabilityai/stable-diffusion-3.5-medium`: transformer/ (`SD3Transformer2DModel` with 3.5 medium's RMS q/k norm and
a dual-attention layer), vae/ (16 latent channels, no quant convs, SD3's scaling and shift factors), text_encoder/
and text_encoder_2/ (CLIP-L and CLIP-G, both `CLIPTextModelWithProjection`), text_encoder_3/ (`T5EncoderModel`),
tokenizer/ and tokenizer_2/ (byte-level CLIP BPE, the second padding with "!" as CLIP-G's does), tokenizer_3/ (a T5
Unigram tokenizer built here), scheduler/ (3.5's `FlowMatchEulerDiscreteScheduler` config: shift 3) and
model_index.json.

Widths: each CLIP 32 wide with a 32-wide projection (pooled projections 64), T5 64 wide (the transformer's
joint-attention width; the CLIPs' 64 concatenated channels are zero-padded to it, as on the real model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_sd import tiny_clip_text_encoder
from .tokenizers import write_clip_tokenizer, write_t5_tokenizer

# stabilityai/stable-diffusion-3.5-medium's scheduler/scheduler_config.json
SD35_SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
# vae/config.json's latent statistics (SD3 and 3.5)
SD3_VAE_FACTORS = {"scaling_factor": 1.5305, "shift_factor": 0.0609}

CLIP_HIDDEN_SIZE = 32
CLIP_PROJECTION_DIM = 32
T5_WIDTH = 64
LATENT_CHANNELS = 16


def flow_vae(seed: int, channels: tuple[int, int, int, int] = (8, 16, 16, 16), **factors):
    """A random `AutoencoderKL` as SD3's and FLUX.1's: 8x downsampling, 16 latent channels, no quant convs,
    `scaling_factor` and `shift_factor` as given."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=tuple(channels), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=LATENT_CHANNELS, layers_per_block=1, norm_num_groups=8, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False, force_upcast=True, **factors,
    )


def tiny_t5_encoder(d_model: int, seed: int):
    """A random `T5EncoderModel` (T5 v1.1's gated-GELU feed-forward) over the tiny T5 tokenizer's ids; weights drawn
    from a private seeded generator, wide enough that different prompts embed differently."""
    from transformers import T5Config, T5EncoderModel

    from .tiny_recipe import _randomize, _t5_vocab

    config = T5Config(vocab_size=len(_t5_vocab()), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
                      eos_token_id=1)
    torch.manual_seed(seed)
    model = T5EncoderModel(config)
    _randomize(model, torch.Generator().manual_seed(seed), std=0.5)
    return model


def build_tiny_sd3(folder: str | Path, seed: int = 0, *, num_layers: int = 2, head_dim: int = 8,
                   heads: int = 4) -> Path:
    """Build a tiny random SD 3.5 and save it under `folder` (safetensors); returns the folder. Deterministic for a
    given seed and sizes."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=num_layers, attention_head_dim=head_dim, num_attention_heads=heads,
        joint_attention_dim=T5_WIDTH, caption_projection_dim=head_dim * heads,
        pooled_projection_dim=2 * CLIP_PROJECTION_DIM, pos_embed_max_size=96, qk_norm="rms_norm",
        dual_attention_layers=(0,),
    )
    vae = flow_vae(seed + 1, **SD3_VAE_FACTORS)
    text_encoder = tiny_clip_text_encoder(CLIP_HIDDEN_SIZE, seed + 2, projection_dim=CLIP_PROJECTION_DIM)
    text_encoder_2 = tiny_clip_text_encoder(CLIP_HIDDEN_SIZE, seed + 3, projection_dim=CLIP_PROJECTION_DIM)
    text_encoder_3 = tiny_t5_encoder(T5_WIDTH, seed + 4)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    text_encoder_2.save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    text_encoder_3.save_pretrained(folder / "text_encoder_3", safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    write_t5_tokenizer(folder / "tokenizer_3")
    FlowMatchEulerDiscreteScheduler.from_config(SD35_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "StableDiffusion3Pipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return folder
