"""The job end to end on tiny SD 3.5 and tiny FLUX.1-dev: files, resume, concepts, captions, report and exports with
aspect buckets of 16 px multiples, then sharded output with candidates (one slow test per family)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.images import flow_buckets
from diffedit_batch.pipeline import run_job
from diffedit_batch.report import build_report

from .conftest import read_records
from .test_job import EXAMPLE_EDITS

pytestmark = pytest.mark.slow

COUNT = 2


@pytest.mark.parametrize("fixture, family", [("tiny_sd3_dir", "sd3"), ("tiny_flux_dir", "flux")])
def test_flow_family_end_to_end(request, ray_local, job_config, example_copy, tmp_path, fixture, family):
    folder = request.getfixturevalue(fixture)
    manifest = str(example_copy / "manifest.parquet")
    output = tmp_path / "out"
    # A tiny random transformer's velocity differences are nearly even over the picture: at the default ratio its
    # mask can come out empty, and such an edit is filtered ("nothing left to edit"). A low ratio keeps every mask.
    config = job_config(f"model.pretrained={folder}", "model.aspect_buckets=auto", "edit.num_inference_steps=6",
                        "edit.mask_thresholding_ratio=1")
    summary = run_job(config, manifest, str(output))
    assert (summary.ok, summary.failed) == (8, 0)
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(EXAMPLE_EDITS)
    by_id = {r["id"]: r for r in records}
    assert by_id["chelsea-concepts"]["source_concept"] == "cat"  # Flan-T5 captions embedded by every encoder
    assert by_id["coffee-caption"]["caption"].startswith("a photograph of")  # BLIP captions the inversion
    for record in records:
        edited = Image.open(record["image_uri"])
        assert edited.size == (record["width"], record["height"]) and edited.mode == "RGB"
        assert np.asarray(edited).std() > 0
    run_file = json.loads((output / "runs" / f"{summary.run_id}.json").read_text())
    assert run_file["config"]["model"]["family"] == family  # resolved before the run
    shapes = {(w // 8, h // 8) for w, h in flow_buckets(64)}  # latents of 16 px multiples
    assert {(shape[3], shape[2]) for shape in run_file["engine"]["unet_shapes"]} <= shapes
    assert all(shape[1] == 16 for shape in run_file["engine"]["unet_shapes"])  # 16 latent channels

    again = run_job(config, manifest, str(output))
    assert (again.ok, again.skipped) == (0, 8)
    report = build_report(str(output), workers=2)
    assert (report.records, report.thumbnails_failed) == (8, 0)
    for export_format in ("diffedit", "instruct-pix2pix"):
        exported = export_dataset(str(output), str(tmp_path / export_format), export_format=export_format)
        assert (exported.rows, exported.skipped) == (8, 0)

    sharded = tmp_path / "sharded"
    config = job_config(f"model.pretrained={folder}", "edit.num_inference_steps=6", "edit.mask_thresholding_ratio=1",
                        "output.format=webdataset",
                        "output.shard_rows=4", f"candidates.count={COUNT}", "candidates.rank_by=mask_coverage",
                        "candidates.vary={inpaint_strength: [0.5, 0.8], guidance_scale: [2, 5]}")
    summary = run_job(config, manifest, str(sharded))
    requests = len(EXAMPLE_EDITS)
    assert (summary.ok, summary.filtered, summary.failed) == (requests, requests * (COUNT - 1), 0)
    records = read_records(sharded)
    assert Counter(r["status"] for r in records) == {"ok": requests, "filtered": requests * (COUNT - 1)}
    assert list((sharded / "shards").iterdir()) and not (sharded / "images").exists()
    assert run_job(config, manifest, str(sharded)).skipped == requests
