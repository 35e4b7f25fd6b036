"""UNet batches on photos of mixed aspect ratios: mean UNet samples per call and distinct UNet input shapes.

Builds a manifest of `--pictures` photos (scikit-image samples cropped to a realistic mix of aspect ratios: 4:3,
3:2, 16:9, 1:1, portraits 3:4, 2:3 and 9:16, 5:4, 21:9, and one picture in three an odd crop of any ratio from 1:2
to 2:1, at various sizes) and runs
the job on the tiny random Stable Diffusion (in-process Ray, one CPU edit actor), with aspect buckets off and on,
`job.batch_size` 8 and `model.max_unet_batch` 16. The figures are the engine's own counters, summed over the edit
actors into the run file (`runs/<run_id>.json`, `engine`). The model is tiny and the steps few: counts, not
speed, are the point.

    .venv/bin/python benchmarks/batching_benchmark.py [--pictures 192] [--resolution 128] [--json batching.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABEL = "UNet samples per call and distinct UNet shapes on mixed aspect ratios, aspect buckets off and on"
RATIOS = [(4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3), (9, 16), (5, 4), (21, 9), (4, 3), (3, 2), (1, 1)]


def make_manifest(folder: Path, pictures: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    samples = [Image.fromarray(getattr(data, name)()).convert("RGB")
               for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")]
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    rows = []
    for k in range(pictures):
        width_ratio, height_ratio = RATIOS[k % len(RATIOS)]
        if k % 3 == 2:  # an odd crop
            width_ratio, height_ratio = float(rng.uniform(0.5, 2.0)), 1.0
        source = samples[k % len(samples)]
        longer = int(rng.integers(320, 1200))  # various sizes: the aspect ratio, not the size, sets the bucket
        if width_ratio >= height_ratio:
            size = (longer, max(8, round(longer * height_ratio / width_ratio)))
        else:
            size = (max(8, round(longer * width_ratio / height_ratio)), longer)
        Image.fromarray(np.asarray(source.resize(size))).save(folder / "images" / f"{k}.jpg", quality=90)
        rows.append({"id": f"photo-{k:04d}", "image": f"images/{k}.jpg", "source_prompt": "a photo",
                     "target_prompt": "a painting", "seed": k})
    pq.write_table(pa.Table.from_pylist(rows), folder / "manifest.parquet")
    return folder / "manifest.parquet"


def run(manifest: Path, output: Path, model: Path, resolution: int, buckets: str) -> dict:
    command = [sys.executable, "-m", "diffedit_batch.cli", "run", "--config", str(ROOT / "configs" / "tiny.yaml"),
               "--input", str(manifest), "--output", str(output)]
    for setting in (f"model.pretrained={model}", f"model.resolution={resolution}", f"model.aspect_buckets={buckets}",
                    "model.max_unet_batch=16", "job.batch_size=8", "edit.num_inference_steps=4",
                    "edit.num_maps_per_mask=2", "job.progress_interval_s=3600"):
        command += ["--set", setting]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    [run_file] = list((output / "runs").glob("*.json"))
    metadata = json.loads(run_file.read_text())
    engine = metadata["engine"]
    return {"buckets": buckets, "edits": metadata["ok"], "unet_calls": engine["unet_calls"],
            "unet_samples": engine["unet_samples"], "samples_per_call": engine["unet_samples"] / engine["unet_calls"],
            "unet_shapes": len(engine["unet_shapes"]),
            "latent_sizes": len({tuple(shape[2:]) for shape in engine["unet_shapes"]}),
            "vae_encodes": engine["vae_encodes"], "vae_decodes": engine["vae_decodes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--pictures", type=int, default=192)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from diffedit_batch.data.images import default_buckets
    from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion

    print(LABEL)
    figures = []
    with tempfile.TemporaryDirectory(prefix="batching-") as workdir:
        folder = Path(workdir)
        model = build_tiny_stable_diffusion(folder / "tiny-sd")
        manifest = make_manifest(folder / "in", args.pictures)
        for buckets in ("off", "auto"):
            result = run(manifest, folder / f"out-{buckets}", model, args.resolution, buckets)
            figures.append(result)
            print(f"buckets {buckets:>4}: {result['edits']} edits, {result['unet_calls']} UNet calls of "
                  f"{result['samples_per_call']:.1f} samples on average, {result['unet_shapes']} distinct UNet input "
                  f"shapes over {result['latent_sizes']} latent sizes; VAE encodes {result['vae_encodes']}, decodes "
                  f"{result['vae_decodes']}", flush=True)
        print(f"auto buckets at {args.resolution} px: {len(default_buckets(args.resolution))} shapes")
    if args.json:
        args.json.write_text(json.dumps({"label": LABEL, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
