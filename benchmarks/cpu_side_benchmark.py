"""CPU side of an edit at 768 px: the fetch and write stages' CPU seconds per edit, without Ray or a model.

Pictures are scikit-image's sample photographs (astronaut, coffee, chelsea, rocket, ...), flipped and cropped into
distinct files, scaled to 1024 px on their longer side and saved as JPEG, as a photo manifest would point at; with
several targets a picture, its targets share one fetch. Each row goes through the job's own stage
functions: `fetch_images` (read, decode, resize to the model's input), a stand-in edit (the input with its centre
changed, a blob mask at latent resolution), then `write_outputs` (restore to the original size, background
PSNR/SSIM, PNG encodes, writes to a temp folder). CPU time is the process's (`time.process_time`), so other load on
the machine does not count. Figures for the default settings and for zlib level 6 (Pillow's default).

    .venv/bin/python benchmarks/cpu_side_benchmark.py [--edits 24] [--targets 1] [--json cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffedit_batch.config import OutputConfig  # noqa: E402
from diffedit_batch.data.status import Status  # noqa: E402
from diffedit_batch.data.storage import StorageOptions  # noqa: E402
from diffedit_batch.pipeline.rows import to_table  # noqa: E402
from diffedit_batch.pipeline.stages import fetch  # noqa: E402
from diffedit_batch.pipeline.stages.write import write_outputs  # noqa: E402

LABEL = "CPU seconds per edit in the fetch and write stages at 768 px"


def photos(folder: Path, count: int) -> list[str]:
    """`count` distinct JPEG files, 1024 px on the longer side: the samples, flipped and cropped differently."""
    from skimage import data

    samples = [Image.fromarray(getattr(data, name)()).convert("RGB")
               for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")]
    uris = []
    for k in range(count):
        image = samples[k % len(samples)]
        if k // len(samples) % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = k // (2 * len(samples)) * 8
        image = image.crop((crop, 0, image.width - crop, image.height))
        scale = 1024 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        path = folder / f"photo-{k}.jpg"
        image.save(path, quality=92)
        uris.append(str(path))
    return uris


def stand_in_edit(row: dict) -> dict:
    size = (row["model_width"], row["model_height"])
    pixels = np.frombuffer(row["pixels"], np.uint8).reshape(size[1], size[0], 3).copy()
    h, w = size[1] // 8, size[0] // 8
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 < 1).astype(np.uint8)
    big = np.kron(mask, np.ones((8, 8), np.uint8)).astype(bool)
    pixels[big] = 255 - pixels[big]
    return {**row, "edited": pixels.tobytes(), "mask": mask.tobytes(), "mask_height": h, "mask_width": w,
            "mask_coverage": float(mask.mean())}


def measure(uris: list[str], edits: int, targets: int, output: OutputConfig, folder: Path) -> dict:
    options = StorageOptions()
    rows = [{"edit_id": f"e{k}#{t}", "row_id": f"e{k}", "row_index": k, "target_index": t,
             "source_image_uri": uris[k], "status": Status.PENDING}
            for k in range(edits // targets) for t in range(targets)]
    fetch._last = None
    started = time.process_time()
    fetched = fetch.fetch_images(to_table(rows), options=options, resolution=768, max_pixels=40_000_000).to_pylist()
    fetch_s = time.process_time() - started
    edited = to_table([stand_in_edit(row) for row in fetched])
    started = time.process_time()
    written = write_outputs(edited, output_prefix=str(folder), options=options, output=output)
    write_s = time.process_time() - started
    assert Status.ERROR not in written.column("status").to_pylist()  # shards: still pending until the commit
    return {"edits": len(rows), "targets": targets, "png_compress_level": output.png_compress_level,
            "format": output.format, "fetch_cpu_s_per_edit": fetch_s / len(rows),
            "write_cpu_s_per_edit": write_s / len(rows), "total_cpu_s_per_edit": (fetch_s + write_s) / len(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--edits", type=int, default=24)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(LABEL)
    figures = []
    with tempfile.TemporaryDirectory(prefix="cpu-side-") as workdir:
        uris = photos(Path(workdir), args.edits)
        for targets, output in [(1, OutputConfig()), (4, OutputConfig()), (1, OutputConfig(png_compress_level=6)),
                                (1, OutputConfig(format="webdataset"))]:
            result = measure(uris, args.edits, targets, output, Path(workdir) / f"out-{len(figures)}")
            figures.append(result)
            print(f"{result['edits']} edits, {targets} target(s) a picture, PNG level {output.png_compress_level}, "
                  f"format {output.format}: fetch {result['fetch_cpu_s_per_edit']:.3f} + write "
                  f"{result['write_cpu_s_per_edit']:.3f} = {result['total_cpu_s_per_edit']:.3f} CPU s per edit",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps({"label": LABEL, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
