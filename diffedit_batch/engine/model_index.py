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
FAMILIES = (SD, SDXL)
FAMILY_NAMES = {SD: "Stable Diffusion 1.x/2.x", SDXL: "Stable Diffusion XL"}

_SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_SDXL_COMPONENTS = _SD_COMPONENTS + ("text_encoder_2", "tokenizer_2")


class UnsupportedModelError(ValueError):
    """The model folder holds an architecture the engine does not drive, or is no diffusers pipeline at all."""


def family_of(model_index: Mapping, where: str = "the model") -> str:
    """`sd` or `sdxl` from a diffusers `model_index.json`; UnsupportedModelError naming what was found otherwise."""
    if not isinstance(model_index, Mapping):
        raise UnsupportedModelError(f"{where} has a model_index.json that is not a JSON object")
    components = sorted(
        name for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2 and value[1] is not None
    )
    present = set(components)
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
        f"Stable Diffusion 1.x/2.x ({', '.join(_SD_COMPONENTS)}) or SDXL base (those and text_encoder_2, tokenizer_2)"
    )


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
    `requires_aesthetics_score`), a model that refines an SDXL base's pictures and cannot edit on its own."""
    def listed(name: str) -> bool:
        value = model_index.get(name)
        return isinstance(value, (list, tuple)) and any(part is not None for part in value)

    if model_index.get("requires_aesthetics_score"):
        return True
    return listed("text_encoder_2") and not listed("text_encoder")
