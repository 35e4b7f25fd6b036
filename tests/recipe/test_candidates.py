"""Candidates: deterministic draws within their ranges, and which candidates are kept and why."""

from __future__ import annotations

import json

import pytest

from diffedit_batch import EditSettings
from diffedit_batch.recipe.candidates import candidate_id, check_vary, draw_candidates, select_candidates

VARY = {"mask_thresholding_ratio": [2.0, 4.0], "inpaint_strength": [0.5, 0.8], "guidance_scale": [7.5, 15.0],
        "num_maps_per_mask": [3, 5], "invert_guidance_scale": {"choices": [1.0, 7.5]}}


def test_draws_are_deterministic_per_seed_and_index_and_within_their_ranges():
    base = EditSettings()
    first = draw_candidates(base, VARY, 8, seed=123)
    assert first == draw_candidates(base, VARY, 8, seed=123)  # a re-run draws the same candidates
    assert draw_candidates(base, VARY, 3, seed=123) == first[:3]  # candidate k does not depend on count
    assert [c.settings for c in draw_candidates(base, VARY, 8, seed=124)] != [c.settings for c in first]
    for candidate in first:
        s = candidate.settings
        assert 2.0 <= s.mask_thresholding_ratio <= 4.0 and 0.5 <= s.inpaint_strength <= 0.8
        assert 7.5 <= s.guidance_scale <= 15.0 and s.num_maps_per_mask in (3, 4, 5)
        assert s.invert_guidance_scale in (1.0, 7.5) and s.num_inference_steps == base.num_inference_steps
        assert candidate.seed == 123 and json.loads(candidate.drawn_json())["inpaint_strength"] == s.inpaint_strength
    assert len({c.settings.guidance_scale for c in first}) == 8
    assert {c.settings.num_maps_per_mask for c in draw_candidates(base, VARY, 64, seed=1)} == {3, 4, 5}  # inclusive


def test_seed_variation_keeps_the_first_candidates_seed():
    candidates = draw_candidates(EditSettings(), {"seed": True}, 4, seed=42)
    assert candidates[0].seed == 42 and len({c.seed for c in candidates}) == 4
    assert all(0 <= c.seed < 2**63 for c in candidates) and all(c.settings == EditSettings() for c in candidates)
    assert candidate_id("row#1", 3) == "row#1~c3"


@pytest.mark.parametrize("vary, message", [
    ({"guidance": [1, 2]}, "vary.guidance is not an edit setting"),
    ({"inpaint_strength": [0.5, 1.5]}, "vary.inpaint_strength: 1.5 is not a valid value"),
    ({"guidance_scale": [9, 3]}, "low > high"),
    ({"guidance_scale": []}, "must not be an empty list"),
    ({"seed": "yes"}, "vary.seed must be true or false"),
    ({"paper_blend_timing": [0, 1]}, "give a list of choices"),
    ({"num_maps_per_mask": {"values": [1]}}, r"or \{choices: \[...\]\}"),
])
def test_a_vary_that_cannot_be_drawn_names_the_setting(vary, message):
    with pytest.raises(ValueError, match=message):
        check_vary(vary, EditSettings())


def test_floors_then_ranking_decide_and_say_why():
    scores = [
        {"clip_directional": 0.30, "clip_image": 0.80},
        {"clip_directional": 0.10, "clip_image": 0.90},  # below the directional floor
        {"clip_directional": 0.25, "clip_image": 0.60},  # below the image floor
        {"clip_directional": 0.40, "clip_image": 0.75},
        {"clip_directional": None, "clip_image": 0.95},  # cannot be computed (no source text)
        {"clip_directional": 0.22, "clip_image": 0.71},
    ]
    verdicts = select_candidates(scores, keep=2, rank_by="clip_directional",
                                 floors={"clip_directional": 0.2, "clip_image": 0.7})
    assert [v.kept for v in verdicts] == [True, False, False, True, False, False]
    assert verdicts[1].reason == "clip_directional 0.1 < min 0.2"
    assert verdicts[2].reason == "clip_image 0.6 < min 0.7"
    assert verdicts[4].reason == "clip_directional could not be computed (floor 0.2)"
    assert verdicts[5].reason == "ranked below keep (3 of 3 passing by clip_directional)"


def test_ceilings_and_a_missing_rank_score():
    scores = [{"mask_coverage": 0.9, "background_psnr": 30.0}, {"mask_coverage": 0.2, "background_psnr": None},
              {"mask_coverage": 0.3, "background_psnr": 20.0}]
    verdicts = select_candidates(scores, keep=1, rank_by="background_psnr", floors={}, ceilings={"mask_coverage": 0.6})
    assert verdicts[0].reason == "mask_coverage 0.9 > max 0.6"
    assert [v.kept for v in verdicts] == [False, False, True]  # a missing rank score ranks last
    assert verdicts[1].reason.startswith("ranked below keep (2 of 2")
