"""Loading Stable Diffusion 1.x/2.x, SDXL, SD 3/3.5 and FLUX.1 components from a hub id or a local folder:
safetensors only, no remote code. The family comes from the folder's `model_index.json` (`families.family_of`)."""

from __future__ import annotations

import logging
import os

import torch

from .devices import resolve_device, resolve_dtype
from .families import FLUX, SD3, SDXL, StableDiffusionXLFamily, UnsupportedModelError, family_of
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
    max_sequence_length: int | None = None,
    text_encoder_device: str | torch.device | None = None,
) -> tuple[dict, dict]:
    """Load unet (or transformer), vae, text encoder(s), tokenizer(s) and schedulers, placed and configured.

    - the family (SD 1.x/2.x, SDXL, SD 3/3.5, FLUX.1) from `model_index.json`; any other architecture is an
      UnsupportedModelError naming what was found. `revision` applies to every component of the model.
    - SD3 and FLUX.1 (`_load_flow_components`): the transformer, the VAE, CLIP and T5 text encoders and the
      folder's `FlowMatchEulerDiscreteScheduler`; `dtype` auto is bfloat16 on CUDA (their released precision);
      `max_sequence_length`: T5's token limit (default 256 on SD3, 512 on FLUX.1).
    - text_encoder_device: where the text encoders run (e.g. `cpu` or a second GPU, where they do not fit beside
      the transformer: FLUX.1's T5 is 9.5 GB in bfloat16); None = `device`. Embeddings move to `device`.
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
    encoder_device = device if text_encoder_device is None else resolve_device(text_encoder_device)
    if family in (SD3, FLUX):
        return _load_flow_components(
            pretrained, family, device, encoder_device, resolve_dtype(dtype, device, auto=_flow_auto_dtype(device)),
            revision=revision, vae=vae, compile_model=compile_unet, compile_mode=compile_mode,
            channels_last=channels_last, vae_slicing=vae_slicing, vae_tiling=vae_tiling,
            prompt_cache_size=prompt_cache_size, max_sequence_length=max_sequence_length)
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
            components[name].to(encoder_device if name.startswith("text_encoder") else device)
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



def _flow_auto_dtype(device: torch.device) -> torch.dtype:
    """SD 3.5 and FLUX.1 are released and run in bfloat16 (float16 overflows in T5 and FLUX.1's transformer)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _t5_tokenizer():
    try:
        from transformers import T5TokenizerFast

        return T5TokenizerFast
    except ImportError:  # transformers 5 has one T5 tokenizer class
        from transformers import T5Tokenizer

        return T5Tokenizer


def _load_flow_components(pretrained: str, family: str, device: torch.device, encoder_device: torch.device,
                          dtype: torch.dtype, *, revision: str | None, vae: str | None, compile_model: bool,
                          compile_mode: str, channels_last: bool | None, vae_slicing: bool, vae_tiling: bool,
                          prompt_cache_size: int, max_sequence_length: int | None) -> tuple[dict, dict]:
    """SD3 (`SD3Transformer2DModel`, CLIP-L and CLIP-G with projection, T5) or FLUX.1 (`FluxTransformer2DModel`,
    CLIP-L, T5), each component from its subfolder as the model's pipeline loads it."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel,
                           SD3Transformer2DModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

    common = {"revision": revision}
    weights = {"use_safetensors": True, **common}
    transformer_class = SD3Transformer2DModel if family == SD3 else FluxTransformer2DModel
    transformer = transformer_class.from_pretrained(pretrained, subfolder="transformer", torch_dtype=dtype, **weights)
    vae_model = AutoencoderKL.from_pretrained(**_vae_location(pretrained, vae, revision), torch_dtype=dtype,
                                              use_safetensors=True)
    t5_tokenizer = _t5_tokenizer()
    if family == SD3:
        components = {
            "text_encoder": CLIPTextModelWithProjection.from_pretrained(
                pretrained, subfolder="text_encoder", dtype=dtype, **weights),
            "tokenizer": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **common),
            "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                pretrained, subfolder="text_encoder_2", dtype=dtype, **weights),
            "tokenizer_2": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer_2", **common),
            "text_encoder_3": T5EncoderModel.from_pretrained(pretrained, subfolder="text_encoder_3", dtype=dtype,
                                                             **weights),
            "tokenizer_3": t5_tokenizer.from_pretrained(pretrained, subfolder="tokenizer_3", **common),
        }
    else:
        components = {
            "text_encoder": CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=dtype, **weights),
            "tokenizer": CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **common),
            "text_encoder_2": T5EncoderModel.from_pretrained(pretrained, subfolder="text_encoder_2", dtype=dtype,
                                                             **weights),
            "tokenizer_2": t5_tokenizer.from_pretrained(pretrained, subfolder="tokenizer_2", **common),
        }
    components["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(pretrained, subfolder="scheduler",
                                                                              **common)
    transformer.to(device)
    vae_model.to(device)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if name in components:
            components[name].to(encoder_device)
    if channels_last if channels_last is not None else device.type == "cuda":
        vae_model.to(memory_format=torch.channels_last)  # the transformer has no convolutions to speed up
    if vae_slicing:
        vae_model.enable_slicing()
    if vae_tiling:
        vae_model.enable_tiling()
    if compile_model:
        log.info("compiling the transformer with torch.compile (mode %s, once per engine)", compile_mode)
        transformer = torch.compile(transformer, mode=compile_mode)
    components["transformer"] = transformer
    components["vae"] = vae_model
    options = {"prompt_cache_size": prompt_cache_size, "static_unet_batches": compile_model,
               "max_sequence_length": max_sequence_length}
    return components, options
