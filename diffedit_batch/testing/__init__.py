"""Code for tests, benchmarks and `make-tiny-model`, never used by the job.

- `tiny_sd`: a tiny random Stable Diffusion, saved in the diffusers folder layout (safetensors).
- `tiny_recipe`: tiny random Flan-T5, BLIP and CLIP, saved in the hub layouts.
- `tokenizers`: the byte-level CLIP tokenizer they share, built with no download.
- `reference`: the deprecated diffusers DiffEdit pipeline run row by row, the engine's reference.
"""
