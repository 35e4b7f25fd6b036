"""The recipe helpers' published defaults, importable without torch: the config's defaults are these."""

from __future__ import annotations

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
