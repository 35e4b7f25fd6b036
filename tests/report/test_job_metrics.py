"""The job writes background and CLIP metrics into the result manifest, and a run file with its config."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffedit_batch.data.images import decode_image, fit_to_resolution
from diffedit_batch.data.metrics import PSNR_CAP_DB

pytestmark = pytest.mark.slow

METRICS = ["background_psnr", "background_ssim", "clip_target_score", "clip_source_score"]


def test_ok_records_carry_every_metric_and_failed_ones_none(report_job):
    for record_id in "abc":
        record = report_job.records[record_id]
        assert record["status"] == "ok"
        if record["mask_coverage"] < 1.0:
            assert 0.0 < record["background_psnr"] <= PSNR_CAP_DB
            assert -1.0 <= record["background_ssim"] <= 1.0
        for name in ("clip_target_score", "clip_source_score"):
            assert -1.0 <= record[name] <= 1.0 and math.isfinite(record[name])
    for record_id in "de":
        assert report_job.records[record_id]["status"] == "error"
        assert all(report_job.records[record_id][name] is None for name in METRICS)


def test_clip_source_score_is_the_model_resolution_input_against_the_source_prompt(report_job):
    from diffedit_batch.recipe.clip_score import ClipScorer

    record = report_job.records["c"]
    picture = decode_image((report_job.folder / "chelsea.png").read_bytes())
    model_input = fit_to_resolution(picture, report_job.config.model.resolution)
    expected = ClipScorer(str(report_job.clip_dir), device="cpu").score([model_input], [record["source_prompt"]])[0]
    assert record["clip_source_score"] == pytest.approx(expected, abs=1e-5)


def test_background_psnr_agrees_with_the_written_edit(report_job):
    """The PSNR is measured at model resolution; the PNG is the edit resized back, so only roughly equal."""
    from diffedit_batch.data.metrics import background_psnr

    record = report_job.records["a"]
    picture = np.asarray(decode_image((report_job.folder / "astronaut.png").read_bytes()))
    edit = np.asarray(Image.open(record["image_uri"]).convert("RGB"))
    background = np.asarray(Image.open(record["mask_uri"])) == 0
    assert background_psnr(picture, edit, background) == pytest.approx(record["background_psnr"], abs=3.0)


def test_run_file_holds_the_config_and_the_counts(report_job):
    runs = list((report_job.prefix / "runs").glob("*.json"))
    assert len(runs) == 1
    run = json.loads(runs[0].read_text())
    assert run["run_id"] == report_job.records["a"]["run_id"] == runs[0].stem
    expected = report_job.config.to_dict()
    expected["model"]["family"] = "sd"  # the run resolves model.family auto from the model before it starts
    assert run["config"] == expected
    assert (run["ok"], run["failed"]) == (3, 2) and run["seconds"] > 0


def test_clip_stage_scores_pending_rows_and_passes_others_through(report_job):
    from diffedit_batch.recipe.clip_score import ClipScorer
    from diffedit_batch.pipeline.stages.clip_scores import ClipScoreStage
    from diffedit_batch.pipeline.rows import to_table

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(2)]
    rows = [
        {"edit_id": "x", "status": "pending", "model_width": 24, "model_height": 16, "pixels": pixels[0].tobytes(),
         "edited": pixels[1].tobytes(), "source_prompt": "a cat", "target_prompt": "a dog"},
        {"edit_id": "y", "status": "pending", "model_width": 24, "model_height": 16, "pixels": pixels[1].tobytes(),
         "edited": pixels[0].tobytes(), "source_prompt": None, "target_prompt": "a fox"},
        {"edit_id": "z", "status": "error", "error": "broken", "source_prompt": "a", "target_prompt": "b"},
    ]
    out = ClipScoreStage(str(report_job.clip_dir), device="cpu")(to_table(rows)).to_pylist()
    scorer = ClipScorer(str(report_job.clip_dir), device="cpu")
    images = [Image.fromarray(p) for p in pixels]
    assert out[0]["clip_target_score"] == pytest.approx(scorer.score([images[1]], ["a dog"])[0], abs=1e-5)
    assert out[0]["clip_source_score"] == pytest.approx(scorer.score([images[0]], ["a cat"])[0], abs=1e-5)
    assert out[1]["clip_target_score"] == pytest.approx(scorer.score([images[0]], ["a fox"])[0], abs=1e-5)
    assert out[1]["clip_source_score"] is None  # no source prompt
    assert out[2]["clip_target_score"] is None and out[2]["error"] == "broken"
    with pytest.raises(KeyError, match="pixels"):
        ClipScoreStage.__call__(ClipScoreStage.__new__(ClipScoreStage), pa.table({"status": ["pending"]}))
