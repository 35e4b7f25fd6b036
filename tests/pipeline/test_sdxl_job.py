"""The job end to end on a tiny SDXL: every output format, resume, concepts, captions, report and export, and the
SDXL training shapes as aspect buckets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.images import sdxl_buckets
from diffedit_batch.pipeline import run_job
from diffedit_batch.report import build_report

from .conftest import read_records
from .test_job import EXAMPLE_EDITS

pytestmark = pytest.mark.slow


@pytest.fixture
def sdxl_config(job_config, tiny_sdxl_dir):
    def make(*overrides: str):
        return job_config(f"model.pretrained={tiny_sdxl_dir}", *overrides)

    return make


def test_sdxl_example_end_to_end_with_resume_report_and_export(ray_local, sdxl_config, example_copy, tmp_path):
    output = tmp_path / "out"
    config = sdxl_config("model.aspect_buckets=auto")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (summary.ok, summary.failed) == (8, 0)
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(EXAMPLE_EDITS)
    by_id = {r["id"]: r for r in records}
    assert by_id["chelsea-concepts"]["source_concept"] == "cat"  # Flan-T5 captions embedded by both encoders
    assert by_id["coffee-caption"]["caption"].startswith("a photograph of")  # BLIP unchanged
    for record in records:
        edited = Image.open(record["image_uri"])
        assert edited.size == (record["width"], record["height"]) and edited.mode == "RGB"
        assert np.asarray(edited).std() > 0  # a picture, not a flat (NaN) one
    run_file = json.loads((output / "runs" / f"{summary.run_id}.json").read_text())
    assert run_file["config"]["model"]["family"] == "sdxl"  # resolved before the run
    # every UNet input is a latent of one of SDXL's training shapes (scaled to the tiny 64 px resolution)
    shapes = {(w // 8, h // 8) for w, h in sdxl_buckets(64)}
    assert {(shape[3], shape[2]) for shape in run_file["engine"]["unet_shapes"]} <= shapes

    again = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (again.ok, again.skipped) == (0, 8)
    report = build_report(str(output), workers=2)
    assert (report.records, report.thumbnails_failed) == (8, 0)
    for export_format in ("diffedit", "instruct-pix2pix"):
        exported = export_dataset(str(output), str(tmp_path / export_format), export_format=export_format)
        assert (exported.rows, exported.skipped) == (8, 0)


@pytest.mark.parametrize("output_format", ["webdataset", "parquet"])
def test_sdxl_sharded_formats(ray_local, sdxl_config, example_copy, tmp_path, output_format):
    output = tmp_path / "out"
    config = sdxl_config(f"output.format={output_format}", "output.shard_rows=4")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (summary.ok, summary.failed) == (8, 0)
    assert list((output / "shards").iterdir()) and not (output / "images").exists()
    assert (run_job(config, str(example_copy / "manifest.parquet"), str(output)).skipped) == 8
