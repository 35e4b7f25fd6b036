"""Data-path benchmark: job.mode=noop skips diffusion and keeps everything else.

The whole job (manifest read, expand, fetch and decode, the edit actor pool passing inputs through, PNG encode,
background metrics, writes, result records, the driver's summary) on generated manifests of growing size, each
run by a fresh driver process with its own in-process Ray, so that each peak is its own. Per size it prints the
driver's peak RSS (ru_maxrss of the driver process: Ray's workers are other processes) and the rows/s of the
data path. The driver's peak must stay flat as the manifest grows: its memory may not scale with the rows.

    .venv/bin/python benchmarks/datapath_benchmark.py                      # 1,000 and 20,000 rows
    .venv/bin/python benchmarks/datapath_benchmark.py --rows 1000 5000 --distinct --json figures.json

Rows share a few 64x64 PNGs (`--images`, default 16), or each has its own file (`--distinct`). Timings are
wall-clock on whatever else the machine runs; the machine's load and the CPU time used while each run went on
are printed beside them, so a contaminated run can be recognised and repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = "data-path benchmark: job.mode=noop skips diffusion and keeps everything else"


def make_manifest(folder: Path, rows: int, images: int | None) -> Path:
    """`rows` edits over `images` distinct 64x64 PNGs (None: one file per row), as one Parquet file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    count = rows if images is None else images
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "images" / f"{k}.png")
    table = pa.table({
        "id": [f"row-{i:07d}" for i in range(rows)],
        "image": [f"images/{i % count}.png" for i in range(rows)],
        "source_prompt": ["a photo"] * rows,
        "target_prompt": [f"a painting {i % 97}" for i in range(rows)],
    })
    pq.write_table(table, folder / "manifest.parquet")
    return folder / "manifest.parquet"


def cpu_busy_seconds() -> float:
    """Seconds of CPU used by every process on the machine so far (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def drive(manifest: str, output: str, overrides: list[str]) -> dict:
    """Run in the fresh driver process: the job, then this process's peak RSS."""
    sys.path.insert(0, str(ROOT))
    from diffedit_batch.config import load_config
    from diffedit_batch.pipeline import run_job

    config = load_config(ROOT / "configs" / "tiny.yaml", ["job.mode=noop", *overrides])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    summary = run_job(config, manifest, output)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading the records back
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    finished = ds.dataset(f"{output}/manifest", format="parquet").to_table(columns=["finished_at"])["finished_at"]
    first, last = pc.min(finished).as_py(), pc.max(finished).as_py()
    return {
        "ok": summary.ok, "failed": summary.failed, "seconds": seconds,
        "rows_per_s": summary.ok / seconds,
        # from the first record written to the last: the data path once running, without Ray's start-up
        "steady_rows_per_s": summary.ok / max((last - first).total_seconds(), 1e-9),
        "peak_rss_mib": peak,
        "rss_before_job_mib": before,  # imports only: torch, pyarrow, Ray's client
    }


def run_driver(manifest: Path, output: Path, overrides: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--drive", str(manifest), str(output), *overrides],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(rows: int, images: int | None, batch_size: int, workdir: Path, rerun: bool = False) -> dict:
    """One size. With `rerun`, a first run finds no image (every row an error record) and the measured run is
    the re-run that edits them all: it replaces `rows` earlier records."""
    folder = workdir / f"rows-{rows}-{'distinct' if images is None else images}{'-rerun' if rerun else ''}"
    manifest = make_manifest(folder, rows, images)
    overrides = [f"job.batch_size={batch_size}", "model.resolution=64", "job.decode_cpus=0.5",
                 "job.write_cpus=0.5", "job.progress_interval_s=3600", "job.max_failed_fraction=1"]
    if rerun:
        (folder / "images").rename(folder / "images-later")
        first = run_driver(manifest, folder / "out", overrides)
        assert first["ok"] == 0 and first["failed"] == rows, first
        (folder / "images-later").rename(folder / "images")
    load_before, busy_before, wall_before = os.getloadavg()[0], cpu_busy_seconds(), time.perf_counter()
    result = run_driver(manifest, folder / "out", overrides)
    result.update(rows=rows, images="distinct" if images is None else images, batch_size=batch_size, rerun=rerun,
                  machine_cpu_s=cpu_busy_seconds() - busy_before, wall_s=time.perf_counter() - wall_before,
                  load_before=load_before, load_after=os.getloadavg()[0])
    if result["ok"] != rows:
        raise RuntimeError(f"{rows} rows but {result['ok']} ok edits")
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=LABEL)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--images", type=int, default=16, help="distinct image files the rows share")
    parser.add_argument("--distinct", action="store_true", help="also run each size with one image file per row")
    parser.add_argument("--rerun", action="store_true",
                        help="also measure re-runs that replace an earlier run's error record for every row")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--drive", nargs="+", help=argparse.SUPPRESS)  # internal: the driver subprocess
    args = parser.parse_args(argv)
    if args.drive:
        manifest, output, *overrides = args.drive
        print(json.dumps(drive(manifest, output, overrides)))
        return 0

    print(LABEL)
    print(f"{os.cpu_count()} CPUs; each size in a fresh driver process with an in-process Ray")
    variants = [(args.images, False)] + ([(None, False)] if args.distinct else []) + ([(args.images, True)] if args.rerun else [])
    figures = []
    with tempfile.TemporaryDirectory(prefix="datapath-") as workdir:
        for images, rerun in variants:
            for rows in args.rows:
                result = measure(rows, images, args.batch_size, Path(workdir), rerun)
                figures.append(result)
                print(
                    f"{rows:>7} rows, images {result['images']!s:>8}{' (re-run)' if rerun else ''}, "
                    f"batch {args.batch_size}: "
                    f"driver peak RSS {result['peak_rss_mib']:7.1f} MiB (after imports {result['rss_before_job_mib']:.1f}), "
                    f"{result['rows_per_s']:7.1f} rows/s over {result['seconds']:6.1f} s "
                    f"({result['steady_rows_per_s']:.1f} rows/s from first to last record) "
                    f"[machine CPU {result['machine_cpu_s'] / result['wall_s']:.2f} cores busy of {os.cpu_count()}, "
                    f"load {result['load_before']:.1f} -> {result['load_after']:.1f}]",
                    flush=True,
                )
    by_variant: dict = {}
    for result in figures:
        by_variant.setdefault((result["images"], result["rerun"]), []).append(result)
    for (images, rerun), results in by_variant.items():
        small, large = min(results, key=lambda r: r["rows"]), max(results, key=lambda r: r["rows"])
        if large["rows"] > small["rows"]:
            growth = large["peak_rss_mib"] - small["peak_rss_mib"]
            print(f"images {images}{' (re-run)' if rerun else ''}: driver peak grows {growth:+.1f} MiB from {small['rows']} to {large['rows']} rows "
                  f"({growth * 1024 / (large['rows'] - small['rows']):+.2f} KiB per row)")
    if args.json:
        args.json.write_text(json.dumps({"label": LABEL, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
