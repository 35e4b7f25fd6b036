"""Loading Stable Diffusion components from a hub id or a local folder: safetensors only, no remote code."""

from __future__ import annotations

import logging

import torch

from .devices import resolve_device, resolve_dtype
from .schedule import inverse_scheduler_from

log = logging.getLogger(__name__)


def load_components(
    pretrained: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    compile_unet: bool = False,
    compile_mode: str = "default",
    channels_last: bool | None = None,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    prompt_cache_size: int = 256,
) -> tuple[dict, dict]:
    """Load unet, vae, text_encoder, tokenizer and DDIM (inverse) schedulers, placed and configured.

    - safetensors only (`use_safetensors=True`): a folder holding only pickled weights fails to load.
    - attention: PyTorch's scaled_dot_product_attention (diffusers' AttnProcessor2_0).
    - channels_last: default on for CUDA, where it speeds up the UNet's convolutions.
    - compile_unet: `torch.compile` once here (with `compile_mode`: default, reduce-overhead for CUDA graphs,
      max-autotune), so each actor pays the compile cost once; the engine then pads every UNet call to
      `max_unet_batch` samples, so one compiled graph serves each latent size.
    - vae_slicing / vae_tiling: decode large images in slices / tiles to bound VAE memory.
    Returns (components for DiffEditEngine, engine options).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextModel, CLIPTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    common = {"revision": revision}
    unet = UNet2DConditionModel.from_pretrained(
        pretrained, subfolder="unet", torch_dtype=dtype, use_safetensors=True, **common
    )
    vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", torch_dtype=dtype, use_safetensors=True, **common)
    text_encoder = CLIPTextModel.from_pretrained(
        pretrained, subfolder="text_encoder", dtype=dtype, use_safetensors=True, **common
    )
    tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **common)
    scheduler_config = DDIMScheduler.load_config(pretrained, subfolder="scheduler", **common)
    # As the DiffEdit guide sets them: DDIM to denoise, DDIM inversion to encode, both from the model's schedule.
    scheduler = DDIMScheduler.from_config(scheduler_config)
    inverse_scheduler = inverse_scheduler_from(scheduler_config)

    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    unet.to(device)
    vae.to(device)
    text_encoder.to(device)
    if channels_last if channels_last is not None else device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if vae_slicing:
        vae.enable_slicing()
    if vae_tiling:
        vae.enable_tiling()
    if compile_unet:
        log.info("compiling the UNet with torch.compile (mode %s, once per engine)", compile_mode)
        unet = torch.compile(unet, mode=compile_mode)
    components = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "inverse_scheduler": inverse_scheduler,
    }
    return components, {"prompt_cache_size": prompt_cache_size, "static_unet_batches": compile_unet}
