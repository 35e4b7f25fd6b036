"""Embedded-bytes read benchmark: a Hugging Face ``datasets``-style Parquet input whose pictures are ``{bytes, path}``
structs (about 100 KB each), run through the job in noop mode, every process's memory sampled.

It writes N rows of distinct pictures (JPEG noise, ``--kb`` KB each; a ClassLabel ``label`` and prompts beside) as
Parquet files of ``--file-rows`` rows in row groups of 100 (as ``datasets.Dataset.to_parquet`` writes image
columns), no compression and no dictionary, so the files hold N x KB bytes. Then one fresh ``diffedit-batch run``
process (in-process Ray, job.mode=noop, 64 px, WebDataset output shards without the source, the label carried)
reads them, and it prints:

- rows per second over the whole run (Ray's start-up included) and over the edit pass (after the plan);
- the peak USS (and RSS) of every process of the run's tree, sampled from /proc/<pid>/smaps as
  `scale_benchmark.PeakRss` does: the driver, Ray's GCS and raylet, every worker;
- that every row ended ok, with its label.

The plan reads only the small columns (row-group statistics say every picture is embedded); the edit pass reads the
pictures once, by spans of row groups (`pipeline.stages.read.read_embedded_work`).

    .venv/bin/python benchmarks/embedded_read_benchmark.py --rows 10000            # 1 GB of pictures
    .venv/bin/python benchmarks/embedded_read_benchmark.py --rows 100000 --json embedded.json   # 10 GB
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from scale_benchmark import RUN_SETTINGS, measured  # noqa: E402 (the project's process-tree sampler)

LABEL = "embedded-bytes read benchmark: N rows of ~100 KB {bytes, path} pictures, noop mode"
CLASSES = ["cat", "dog", "fox"]
ROW_GROUP = 100  # as datasets writes image columns


def pictures(count: int, kb: int, seed: int = 0) -> list[bytes]:
    """`count` JPEGs of noise of about `kb` KB each."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def jpeg(side: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    side = int(128 * (kb * 1024 / len(jpeg(128))) ** 0.5)  # noise compresses alike at every size: scale the side
    return [jpeg(side) for _ in range(count)]


def synthesize(folder: Path, rows: int, kb: int, file_rows: int) -> int:
    """Write `rows` rows as Parquet files of `file_rows`; every row's bytes distinct. Returns the bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    base = pictures(64, kb)
    features = {"image": {"_type": "Image"}, "label": {"names": CLASSES, "_type": "ClassLabel"},
                "source_prompt": {"dtype": "string", "_type": "Value"},
                "target_prompt": {"dtype": "string", "_type": "Value"}}
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64()), ("source_prompt", pa.string()), ("target_prompt", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    written = 0
    for start in range(0, rows, file_rows):
        count = min(file_rows, rows - start)
        with pq.ParquetWriter(folder / f"part-{start // file_rows:05d}.parquet", schema, compression="none",
                              use_dictionary=False) as writer:
            for group in range(start, start + count, ROW_GROUP):
                n = min(ROW_GROUP, start + count - group)
                # distinct bytes per row: a JPEG comment of the row number after the picture's own bytes
                images = [{"bytes": base[(group + k) % len(base)] + f"row {group + k}".encode(), "path": None}
                          for k in range(n)]
                written += sum(len(image["bytes"]) for image in images)
                writer.write_table(pa.table({
                    "image": images, "label": [(group + k) % 3 for k in range(n)],
                    "source_prompt": ["a photo"] * n, "target_prompt": ["a photo in the snow"] * n,
                }, schema=schema), row_group_size=ROW_GROUP)
    return written


def run(folder: Path, output: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "diffedit_batch.cli", "run", "--config", str(ROOT / "configs" / "tiny.yaml"),
               "--input", str(folder), "--output", str(output)]
    settings = [*RUN_SETTINGS, "input.carry_columns=[label]", "output.format=webdataset",
                "output.include_source=false", "output.image_format=jpg", *extra]
    for setting in settings:
        command += ["--set", setting]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log, wall, peaks = measured(command, env, "the run")
    plan = re.search(r"plan: (\d+) edits to do.*?, ([\d.]+) s\)", log)
    summary = re.search(r"edits ok (\d+), failed (\d+)", log)
    return {"wall_s": wall, "plan_s": float(plan.group(2)), "ok": int(summary.group(1)),
            "failed": int(summary.group(2)), "settings": settings, **peaks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000])
    parser.add_argument("--kb", type=int, default=100, help="KB per picture (default 100)")
    parser.add_argument("--file-rows", type=int, default=5000, help="rows per Parquet file (default 5000)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=None, help="where the input and output go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    print(LABEL)
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    figures = []
    with tempfile.TemporaryDirectory(prefix="embedded-", dir=args.workdir) as workdir:
        for rows in args.rows:
            folder, output = Path(workdir) / f"in-{rows}", Path(workdir) / f"out-{rows}"
            started = time.perf_counter()
            size = synthesize(folder, rows, args.kb, args.file_rows)
            made = time.perf_counter() - started
            result = run(folder, output, args.settings)
            result.update(rows=rows, input_bytes=size, synthesized_s=made)
            assert result["ok"] == rows and not result["failed"], result
            edit_s = result["wall_s"] - result["plan_s"]
            result["rows_per_s"] = rows / result["wall_s"]
            result["edit_pass_rows_per_s"] = rows / edit_s
            figures.append(result)
            print(f"{rows:>8} rows, {size / 2**30:.2f} GiB of pictures: {result['wall_s']:.1f} s "
                  f"({result['rows_per_s']:.0f} rows/s; plan {result['plan_s']:.1f} s, after it "
                  f"{result['edit_pass_rows_per_s']:.0f} rows/s); peak USS: driver {result['driver_uss_mib']:.0f} MiB, "
                  f"largest other {result['other_uss_mib']:.0f} MiB ({result['other_uss_process']}); "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
            top = ", ".join(f"{p['command'][:40]} {p['uss_mib']:.0f}" for p in result["processes"][:5])
            print(f"    largest USS (MiB): {top}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(output, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
