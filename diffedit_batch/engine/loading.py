"""Loading Stable Diffusion 1.x/2.x and SDXL components from a hub id or a local folder: safetensors only, no remote
code. The family comes from the folder's `model_index.json` (`families.family_of`)."""

from __future__ import annotations

import logging
import os

import torch

from .devices import resolve_device, resolve_dtype
from .families import SDXL, StableDiffusionXLFamily, UnsupportedModelError, family_of
from .model_index import read_model_index
from .schedule import inverse_scheduler_from

log = logging.getLogger(__name__)


def _vae_location(pretrained: str, vae: str | None, revision: str | None) -> dict:
    """Where the VAE loads from: the model's vae/, or a separate VAE (`vae`: a VAE folder or hub id, or a pipeline
    folder with a vae/ of its own; the model's revision does not apply to it)."""
    if vae is None:
        return {"pretrained_model_name_or_path": pretrained, "subfolder": "vae", "revision": revision}
    subfolder = "vae" if os.path.isdir(os.path.join(os.path.expanduser(vae), "vae")) else None
    return {"pretrained_model_name_or_path": vae, "subfolder": subfolder}


def load_components(
    pretrained: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    vae: str | None = None,
    compile_unet: bool = False,
    compile_mode: str = "default",
    channels_last: bool | None = None,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    prompt_cache_size: int = 256,
) -> tuple[dict, dict]:
    """Load unet, vae, text encoder(s), tokenizer(s) and DDIM (inverse) schedulers, placed and configured.

    - the family (SD 1.x/2.x or SDXL) from `model_index.json`; any other architecture is an UnsupportedModelError
      naming what was found. `revision` applies to every component of the model.
    - safetensors only (`use_safetensors=True`): a folder holding only pickled weights fails to load.
    - schedulers: DDIM to denoise and DDIM inversion to encode, both made from the folder's scheduler config
      (SDXL ships an Euler config: its training schedule is what DDIM reads), as the DiffEdit guide sets them.
    - vae: a separate VAE (e.g. `madebyollin/sdxl-vae-fp16-fix`, which runs in float16). Without one, SDXL's own
      VAE runs in float32 when the model is float16 and its config says `force_upcast` (it overflows in float16).
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
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    model_index = read_model_index(pretrained, revision)
    if model_index is None:
        raise UnsupportedModelError(f"{pretrained} is neither a local folder nor a Hugging Face hub id")
    family = family_of(model_index, where=pretrained)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    common = {"revision": revision}
    unet = UNet2DConditionModel.from_pretrained(
        pretrained, subfolder="unet", torch_dtype=dtype, use_safetensors=True, **common
    )
    location = _vae_location(pretrained, vae, revision)
    vae_dtype = dtype
    if family == SDXL:
        # AutoencoderKL's default is force_upcast=True: a config without the key asks for it too.
        force_upcast = bool(AutoencoderKL.load_config(**location).get("force_upcast", True))
        vae_dtype = StableDiffusionXLFamily.vae_dtype(dtype, force_upcast)
    if vae_dtype != dtype:
        log.info("running the SDXL VAE in %s (its config asks for force_upcast in float16)", vae_dtype)
    vae_model = AutoencoderKL.from_pretrained(**location, torch_dtype=vae_dtype, use_safetensors=True)
    if unet.config.in_channels != vae_model.config.latent_channels:
        raise UnsupportedModelError(
            f"{pretrained}: the UNet takes {unet.config.in_channels} input channels, the VAE makes "
            f"{vae_model.config.latent_channels} (an inpainting or depth UNet?); DiffEdit needs a text-to-image UNet")
    components = {
        "unet": unet,
        "vae": vae_model,
        "text_encoder": CLIPTextModel.from_pretrained(
            pretrained, subfolder="text_encoder", dtype=dtype, use_safetensors=True, **common),
        "tokenizer": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **common),
    }
    options = {"prompt_cache_size": prompt_cache_size, "static_unet_batches": compile_unet}
    if family == SDXL:
        components["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            pretrained, subfolder="text_encoder_2", dtype=dtype, use_safetensors=True, **common)
        components["tokenizer_2"] = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer_2", **common)
        options["force_zeros_for_empty_prompt"] = bool(model_index.get("force_zeros_for_empty_prompt", True))
    scheduler_config = DDIMScheduler.load_config(pretrained, subfolder="scheduler", **common)
    components["scheduler"] = DDIMScheduler.from_config(scheduler_config)
    components["inverse_scheduler"] = inverse_scheduler_from(scheduler_config)

    unet.set_attn_processor(AttnProcessor2_0())
    vae_model.set_attn_processor(AttnProcessor2_0())
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in components:
            components[name].to(device)
    if channels_last if channels_last is not None else device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
        vae_model.to(memory_format=torch.channels_last)
    if vae_slicing:
        vae_model.enable_slicing()
    if vae_tiling:
        vae_model.enable_tiling()
    if compile_unet:
        log.info("compiling the UNet with torch.compile (mode %s, once per engine)", compile_mode)
        components["unet"] = torch.compile(unet, mode=compile_mode)
    return components, options

