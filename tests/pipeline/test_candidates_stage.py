"""Candidates in the edit actor: a request becomes its candidates in one engine call, scored (CLIP included) and
selected; the write stage writes the kept ones (and the rejected ones on request); records say why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffedit_batch import EditSettings
from diffedit_batch.config import CandidatesConfig
from diffedit_batch.data.records import record_from_row
from diffedit_batch.data.status import Status
from diffedit_batch.pipeline.rows import to_table
from diffedit_batch.pipeline.stages.edit import EditStage
from diffedit_batch.pipeline.stages.write import write_outputs
from diffedit_batch.testing.pictures import synthetic_photo

BASE = EditSettings(num_inference_steps=10, num_maps_per_mask=2)
VARY = {"mask_thresholding_ratio": [2.0, 4.0], "inpaint_strength": [0.5, 0.8], "guidance_scale": [5.0, 12.0]}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from diffedit_batch.recipe.clip_score import ClipScorer
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return ClipScorer(str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")), device="cpu")


def request(edit_id, row_index, seed, picture_seed=0, target="a dog"):
    picture = synthetic_photo(48, 48, picture_seed)
    return {"edit_id": edit_id, "row_id": edit_id, "row_index": row_index, "status": Status.PENDING,
            "model_width": 48, "model_height": 48, "width": 48, "height": 48, "pixels": picture.tobytes(),
            "source_prompt": "a cat", "target_prompt": target, "seed": seed, "inversion_prompt": None,
            "source_image_uri": f"pictures/{picture_seed}.png"}


def test_each_request_becomes_its_candidates_scored_and_the_best_kept(engine, scorer):
    config = CandidatesConfig(count=4, keep=1, vary=VARY, rank_by="clip_directional", min={"clip_image": -1.0})
    stage = EditStage(None, BASE, engine=engine, batch_size=8, candidates=config, scorer=scorer)
    before = engine.stats.unet_samples
    out = stage(to_table([request("r1", 0, 5), request("r2", 1, 6, picture_seed=1)])).to_pylist()
    assert [row["edit_id"] for row in out] == [f"r{r}~c{k}" for r in (1, 2) for k in range(4)]
    for name in ("r1", "r2"):
        mine = [row for row in out if row["edit_id"].startswith(name + "~")]
        kept = [row for row in mine if row["status"] == Status.PENDING]
        assert len(kept) == 1 and kept[0]["edited"] is not None
        assert kept[0]["clip_directional"] == max(row["clip_directional"] for row in mine)
        for row in mine:
            assert -1 <= row["clip_image"] <= 1 and row["clip_target_score"] is not None
            assert row["clip_source_score"] is not None  # the CLIP stage's columns too: there is none then
            assert row["background_psnr"] is not None and row["mask_coverage"] is not None
            drawn = json.loads(row["candidate_settings"])
            assert set(drawn) == set(VARY) and 0.5 <= drawn["inpaint_strength"] <= 0.8
            if row["status"] == Status.FILTERED:
                assert row["filter_reason"].startswith("ranked below keep") and row["edited"] is None
    # Two pictures, four candidates each: per picture one mask (2 x 2 maps), one inversion to its highest strength
    # (2 x steps) and four edits (2 x each candidate's steps).
    steps = [[int(10 * json.loads(row["candidate_settings"])["inpaint_strength"]) for row in out[i:i + 4]]
             for i in (0, 4)]
    assert engine.stats.unet_samples - before == sum(4 + 2 * max(s) + 2 * sum(s) for s in steps)


def test_a_floor_no_candidate_meets_leaves_the_request_with_no_ok_edit(engine, scorer, tmp_path):
    config = CandidatesConfig(count=3, keep=2, vary=VARY, rank_by="background_psnr", min={"clip_image": 2.0},
                              keep_rejected=True)
    stage = EditStage(None, BASE, engine=engine, batch_size=8, candidates=config, scorer=scorer)
    out = stage(to_table([request("r", 0, 9)])).to_pylist()
    assert {row["status"] for row in out} == {Status.FILTERED}
    assert all(row["filter_reason"].startswith("clip_image ") and "< min 2" in row["filter_reason"] for row in out)
    # keep_rejected: their pictures are written, and their records keep outputs and scores but say filtered
    written = write_outputs(to_table(out), output_prefix=str(tmp_path), options=None).to_pylist()
    records = [record_from_row(row, "m", "run") for row in written]
    assert all(r["status"] == Status.FILTERED and r["image_uri"] and r["clip_image"] is not None for r in records)
    assert (tmp_path / "images").exists() and len(list((tmp_path / "images").iterdir())) == 3


def test_one_candidate_is_todays_edit(engine):
    plain = EditStage(None, BASE, engine=engine, batch_size=8)
    one = EditStage(None, BASE, engine=engine, batch_size=8, candidates=CandidatesConfig(count=1))
    [a] = plain(to_table([request("r", 0, 3)])).to_pylist()
    [b] = one(to_table([request("r", 0, 3)])).to_pylist()
    assert a["edit_id"] == b["edit_id"] == "r" and b["candidate"] is None and b["filter_reason"] is None
    assert a["edited"] == b["edited"] and a["mask"] == b["mask"]


def test_candidate_rows_equal_the_engine_called_with_their_settings(engine):
    from diffedit_batch.recipe.candidates import draw_candidates

    config = CandidatesConfig(count=3, keep=3, vary={**VARY, "seed": True}, rank_by="mask_coverage")
    stage = EditStage(None, BASE, engine=engine, batch_size=8, candidates=config)
    out = stage(to_table([request("r", 0, 11)])).to_pylist()
    picture = synthetic_photo(48, 48, 0)
    for row, candidate in zip(out, draw_candidates(BASE, config.vary, 3, 11)):
        [alone] = engine.edit([picture], ["a cat"], ["a dog"], [candidate.seed], candidate.settings)
        assert row["seed"] == candidate.seed and row["status"] == Status.PENDING
        edited = np.frombuffer(row["edited"], np.uint8).reshape(48, 48, 3)
        assert np.abs(edited.astype(float) - np.asarray(alone.image, float)).mean() <= 0.5


def test_candidates_scored_with_clip_need_no_clip_stage_of_their_own(tmp_path):
    from diffedit_batch.config import load_config
    from diffedit_batch.pipeline.plan import edit_pass_stages

    def stage_names(*overrides):
        config = load_config(None, ["metrics.clip_model=models/clip", "model.resolution=64", *overrides])
        return [stage.name for stage in edit_pass_stages(config, str(tmp_path), "run", caption_images=False)]

    assert "clip scores" in stage_names()
    assert "clip scores" in stage_names("candidates.count=2", "candidates.rank_by=mask_coverage")
    assert "clip scores" not in stage_names("candidates.count=2")  # ranked by clip_directional in the edit actor
