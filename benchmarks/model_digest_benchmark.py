"""What telling a local model folder by its bytes costs: the digest of a folder of random safetensors-like files laid
out as SDXL base is (UNet 5.1 GB, second text encoder 1.4 GB, VAE and first text encoder: about 7 GB), measured
three times: read from disk (each file's pages evicted first with posix_fadvise, nothing else's), from the page
cache, and again with the digest cache (a stat per file).

    python benchmarks/model_digest_benchmark.py --folder /tmp/digest-bench [--gb 7] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffedit_batch.data.model_digest import folder_digest  # noqa: E402

# SDXL base's weight files, in GB of the whole
LAYOUT = {"unet/diffusion_pytorch_model.safetensors": 5.14, "text_encoder_2/model.safetensors": 1.39,
          "vae/diffusion_pytorch_model.safetensors": 0.33, "text_encoder/model.safetensors": 0.25}


def write_folder(folder: Path, gb: float) -> int:
    """Random safetensors-like files (an 8-byte header length, a JSON header, random bytes) summing to `gb`."""
    import numpy as np

    rng = np.random.default_rng(0)
    block = rng.bytes(64 << 20)
    scale = gb / sum(LAYOUT.values())
    total = 0
    for name, size_gb in LAYOUT.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "config.json").write_text(json.dumps({"_class_name": "X"}))
        size = int(size_gb * scale * 1e9)
        header = json.dumps({"w": {"dtype": "F16", "shape": [size // 2], "data_offsets": [0, size]}}).encode()
        with open(path, "wb") as file:
            file.write(len(header).to_bytes(8, "little") + header)
            written = 0
            while written < size:
                chunk = block[: min(len(block), size - written)]
                file.write(written.to_bytes(8, "little") + chunk[8:])  # no two chunks alike
                written += len(chunk)
        total += size
    return total


def evict(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=None, help="where to write the folder (default: a temp folder)")
    parser.add_argument("--gb", type=float, default=7.0)
    parser.add_argument("--keep", action="store_true", help="keep the folder (a later run with it reuses it)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="digest-bench-"))
    cache = str(folder.parent / f"{folder.name}-digests.json")
    if os.path.exists(cache):  # left by an earlier run: the first measured run must hash
        os.unlink(cache)
    try:
        started = time.perf_counter()
        if all((folder / name).is_file() for name in LAYOUT):  # kept from an earlier run (--keep)
            print(f"reusing {folder}")
        else:
            total = write_folder(folder, args.gb)
            os.sync()
            print(f"wrote {total / 1e9:.2f} GB in {time.perf_counter() - started:.1f} s")
        evict(folder)
        for what, use_cache in (("from disk", None), ("from the page cache", None), ("first run, cache filled", cache),
                                ("later run, digest cache", cache)):
            if what == "first run, cache filled":
                evict(folder)
            result = folder_digest(str(folder), cache=use_cache)
            print(f"{what} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): {result.seconds:.2f} s, "
                  f"{result.hashed_bytes / 1e9:.2f} GB hashed "
                  f"({result.hashed_bytes / 1e9 / max(result.seconds, 1e-9):.2f} GB/s), {result.files} files, "
                  f"{result.digest}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            if os.path.exists(cache):
                os.unlink(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
