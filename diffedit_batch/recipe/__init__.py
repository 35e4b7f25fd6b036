"""Models beside the engine: the DiffEdit recipe's helpers and a quality scorer. Torch and transformers, no Ray.

- `concepts`: Flan-T5 captions of a concept, averaged into one Stable Diffusion prompt embedding.
- `captions`: BLIP captions of input pictures, used as inversion prompts.
- `clip_score`: CLIP similarity of an edit to its target prompt (and of an input to its source), and the
  InstructPix2Pix scores of a candidate (directional, image-image).
- `candidates`: several edits per request with drawn settings, and which of them are kept (no torch).
- `defaults`: their default model ids, instruction and prompt (no torch), which the config uses.
"""
