"""Which model family a diffusers folder or hub id holds, from its `model_index.json`: no torch, no weights.

The driver reads it before any actor starts (aspect buckets and the settings fingerprint depend on the family); the
loader reads it to build the right components. Both go through `family_of`, so a folder of another architecture
fails the same way, naming what was found.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

SD = "sd"
SDXL = "sdxl"
SD3 = "sd3"
FLUX = "flux"
FAMILIES = (SD, SDXL, SD3, FLUX)
FAMILY_NAMES = {SD: "Stable Diffusion 1.x/2.x", SDXL: "Stable Diffusion XL", SD3: "Stable Diffusion 3/3.5",
                FLUX: "FLUX.1"}

_SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_SDXL_COMPONENTS = _SD_COMPONENTS + ("text_encoder_2", "tokenizer_2")

# The flow-matching transformers: (pipeline class, transformer class) -> family, and the components each needs.
FLOW_PIPELINES = {"StableDiffusion3Pipeline": (SD3, "SD3Transformer2DModel"),
                  "FluxPipeline": (FLUX, "FluxTransformer2DModel")}
FLOW_COMPONENTS = {
    SD3: ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
          "tokenizer_3", "scheduler"),
    FLUX: ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler"),
}
# Transformer pipelines people will point the job at, and why they cannot be DiffEdit'ed here.
REFUSED_PIPELINES = {
    "FluxFillPipeline": "FLUX.1 Fill, an inpainting model that takes a mask and a masked picture",
    "FluxKontextPipeline": "FLUX.1 Kontext, an instruction editing model conditioned on the input picture",
    "FluxControlPipeline": "FLUX.1 Canny/Depth, a control model conditioned on a control picture",
    "FluxControlNetPipeline": "a FLUX.1 ControlNet pipeline",
    "FluxPriorReduxPipeline": "FLUX.1 Redux, an image-variation adapter",
    "Flux2Pipeline": "FLUX.2, whose transformer and text encoder differ from FLUX.1's",
    "Flux2KleinPipeline": "FLUX.2 klein, whose transformer and text encoder differ from FLUX.1's",
    "QwenImagePipeline": "Qwen-Image",
    "QwenImageEditPipeline": "Qwen-Image-Edit",
    "StableDiffusion3ControlNetPipeline": "an SD3 ControlNet pipeline",
    "StableDiffusion3InpaintPipeline": "an SD3 inpainting pipeline",
    "SanaPipeline": "Sana",
    "PixArtSigmaPipeline": "PixArt-Sigma",
    "AuraFlowPipeline": "AuraFlow",
    "HiDreamImagePipeline": "HiDream-I1",
    "Lumina2Pipeline": "Lumina 2",
    "CogView4Pipeline": "CogView4",
    "ChromaPipeline": "Chroma",
}
_SUPPORTED = ("Stable Diffusion 1.x/2.x (unet, vae, text_encoder, tokenizer, scheduler), SDXL base (those and "
              "text_encoder_2, tokenizer_2), SD 3/3.5 (StableDiffusion3Pipeline) or FLUX.1-dev/-schnell (FluxPipeline)")


class UnsupportedModelError(ValueError):
    """The model folder holds an architecture the engine does not drive, or is no diffusers pipeline at all."""


def family_of(model_index: Mapping, where: str = "the model") -> str:
    """`sd`, `sdxl`, `sd3` or `flux` from a diffusers `model_index.json`; UnsupportedModelError naming what was found
    otherwise (and a flow model's missing components)."""
    if not isinstance(model_index, Mapping):
        raise UnsupportedModelError(f"{where} has a model_index.json that is not a JSON object")
    components = sorted(
        name for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2 and value[1] is not None
    )
    present = set(components)
    if "transformer" in model_index or model_index.get("_class_name") in REFUSED_PIPELINES:
        return _flow_family(model_index, components, where)
    if set(_SDXL_COMPONENTS) <= present:
        return SDXL
    if set(_SD_COMPONENTS) <= present and "text_encoder_2" not in present:
        return SD
    pipeline = model_index.get("_class_name", "an unnamed pipeline")
    hint = ""
    if "text_encoder_2" in present and "text_encoder" not in present:
        hint = " (an SDXL refiner has only the second text encoder: use the SDXL base model)"
    raise UnsupportedModelError(
        f"{where} is a {pipeline} with components {', '.join(components) or 'none'}{hint}; diffedit-batch edits with "
        f"{_SUPPORTED}"
    )


def _flow_family(model_index: Mapping, components: list[str], where: str) -> str:
    """`sd3` or `flux` for a text-to-image flow transformer pipeline with every component it needs; otherwise an
    UnsupportedModelError naming the pipeline found, what it is, and any missing component."""
    pipeline = model_index.get("_class_name")
    transformer = model_index.get("transformer")
    transformer_class = transformer[1] if isinstance(transformer, (list, tuple)) and len(transformer) == 2 else None
    found = f"{where} is a {pipeline or 'an unnamed pipeline'} with components {', '.join(components) or 'none'}"
    if pipeline in REFUSED_PIPELINES:
        raise UnsupportedModelError(f"{found} ({REFUSED_PIPELINES[pipeline]}); diffedit-batch edits with {_SUPPORTED}")
    if pipeline is None:  # a folder without the pipeline's name: known by its transformer
        pipeline = next((name for name, (_, cls) in FLOW_PIPELINES.items() if cls == transformer_class), None)
    if pipeline not in FLOW_PIPELINES:
        raise UnsupportedModelError(f"{found}; diffedit-batch edits with {_SUPPORTED}")
    family, expected = FLOW_PIPELINES[pipeline]
    if "controlnet" in components:
        raise UnsupportedModelError(f"{found} (a ControlNet pipeline); diffedit-batch edits with {_SUPPORTED}")
    missing = [name for name in FLOW_COMPONENTS[family] if name not in components]
    if missing:
        raise UnsupportedModelError(
            f"{found}; a {FAMILY_NAMES[family]} model also needs {', '.join(missing)} (a partial download, or a "
            f"folder saved without them?)")
    if transformer_class != expected:
        raise UnsupportedModelError(f"{found}, its transformer a {transformer_class} where {pipeline} has a "
                                    f"{expected}; diffedit-batch edits with {_SUPPORTED}")
    return family


def read_model_index(pretrained: str, revision: str | None = None, *, download: bool = True) -> dict | None:
    """The `model_index.json` of a local folder or hub id: the folder's file, else the Hugging Face cache's copy,
    else (with `download`) that one small file from the hub. None when a hub id's file is not at hand without a
    download. Raises UnsupportedModelError for a local folder without one, or an unreadable one."""
    folder = os.path.expanduser(pretrained)
    if os.path.isdir(folder):
        path = os.path.join(folder, "model_index.json")
        if not os.path.isfile(path):
            raise UnsupportedModelError(f"{pretrained} has no model_index.json: not a diffusers pipeline folder")
    else:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        try:
            path = try_to_load_from_cache(pretrained, "model_index.json", revision=revision)
        except ValueError:  # not a hub id
            return None
        if not isinstance(path, str):
            if not download:
                return None
            path = hf_hub_download(pretrained, "model_index.json", revision=revision)
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise UnsupportedModelError(f"{pretrained}: model_index.json cannot be read ({error})") from None


def null_components(model_index: Mapping) -> list[str]:
    """The components of SD and SDXL pipelines that `model_index.json` lists without a class (`[null, null]`): a
    pipeline saved without them, which no loader can build (the safety checker and feature extractor may be null)."""
    return [name for name in _SDXL_COMPONENTS
            if isinstance(model_index.get(name), (list, tuple)) and all(part is None for part in model_index[name])]


def is_sdxl_refiner(model_index: Mapping) -> bool:
    """Whether `model_index.json` is an SDXL refiner's: the second text encoder without the first (or its
    `requires_aesthetics_score`), a model that refines an SDXL base's pictures and cannot edit on its own. Never a
    transformer pipeline's (SD3's and FLUX.1's text_encoder_2 is their own second encoder)."""
    def listed(name: str) -> bool:
        value = model_index.get(name)
        return isinstance(value, (list, tuple)) and any(part is not None for part in value)

    if "transformer" in model_index or model_index.get("_class_name") in (*FLOW_PIPELINES, *REFUSED_PIPELINES):
        return False
    if model_index.get("requires_aesthetics_score"):
        return True
    return listed("text_encoder_2") and not listed("text_encoder")
