"""Candidates end to end: a record per candidate, the kept ones' outputs, resume by request, exports of the kept."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from diffedit_batch.data.export import export_dataset
from diffedit_batch.pipeline import run_job
from diffedit_batch.report import build_report

from .conftest import read_records
from .test_job import EXAMPLE_EDITS

pytestmark = pytest.mark.slow

COUNT = 3


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def candidates_config(job_config, tiny_clip):
    def make(*overrides: str):
        return job_config(f"metrics.clip_model={tiny_clip}", "metrics.clip_device=cpu", f"candidates.count={COUNT}",
                          "candidates.vary={inpaint_strength: [0.5, 0.8], guidance_scale: [5, 12], "
                          "mask_thresholding_ratio: [2, 4]}", "candidates.min={clip_image: -1.0}", *overrides)

    return make


def test_every_candidate_is_recorded_the_best_kept_and_a_rerun_skips_the_requests(
        ray_local, candidates_config, example_copy, tmp_path):
    output = tmp_path / "out"
    config = candidates_config()
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    requests = len(EXAMPLE_EDITS)
    assert (summary.ok, summary.filtered, summary.failed) == (requests, requests * (COUNT - 1), 0)
    assert f"candidates kept {requests} / generated {requests * COUNT}" in summary.line()
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(f"{e}~c{k}" for e in EXAMPLE_EDITS for k in range(COUNT))
    by_request = {}
    for record in records:
        by_request.setdefault(record["id"].rsplit("~c", 1)[0], []).append(record)
    for request, candidates in by_request.items():
        assert Counter(r["status"] for r in candidates) == {"ok": 1, "filtered": COUNT - 1}, request
        kept = next(r for r in candidates if r["status"] == "ok")
        # a candidate whose mask came out empty (a high threshold on the tiny model) is filtered unscored
        scored = [r for r in candidates if not (r["filter_reason"] or "").startswith("nothing left to edit")]
        assert kept["clip_directional"] == max(r["clip_directional"] for r in scored)
        assert Path(kept["image_uri"]).exists() and Path(kept["mask_uri"]).exists()
        for record in candidates:
            assert json.loads(record["candidate_settings"]).keys() == {"inpaint_strength", "guidance_scale",
                                                                      "mask_thresholding_ratio"}
            if record in scored:
                assert record["clip_image"] is not None and record["background_psnr"] is not None
            if record["status"] == "filtered":
                assert record["image_uri"] is None and record["filter_reason"].startswith(
                    ("ranked below keep", "nothing left to edit"))
    images = list((output / "images").iterdir())
    assert len(images) == requests  # filtered candidates leave no pictures

    again = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (again.ok, again.filtered, again.skipped) == (0, 0, requests)
    exported = export_dataset(str(output), str(tmp_path / "export"))
    assert (exported.rows, exported.skipped) == (requests, 0)
    assert build_report(str(output), workers=2).records == requests * COUNT


def test_a_request_no_candidate_passes_is_done_and_rejected_candidates_can_be_kept_in_shards(
        ray_local, candidates_config, example_copy, tmp_path):
    output = tmp_path / "out"
    config = candidates_config("candidates.min={clip_image: 2.0}", "candidates.keep_rejected=true",
                               "output.format=webdataset")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (summary.ok, summary.filtered) == (0, len(EXAMPLE_EDITS) * COUNT)
    records = read_records(output)
    assert all(r["status"] == "filtered" and "#" in r["image_uri"] and (
        "< min 2" in r["filter_reason"] or r["filter_reason"].startswith("nothing left to edit"))
        for r in records)  # members of a shard: keep_rejected writes them
    again = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (again.ok, again.filtered, again.skipped) == (0, 0, len(EXAMPLE_EDITS))  # done, not retried
    assert export_dataset(str(output), str(tmp_path / "export")).rows == 0
