"""The report of a run with candidates: the survival funnel, fates and request keys in the index, the candidates'
thumbnails where their pictures were kept; a run without candidates is unchanged (no Ray, no model)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from diffedit_batch.data.records import RECORD_SCHEMA, write_record_part
from diffedit_batch.recipe.candidates import select_candidates
from diffedit_batch.report import build_report
from diffedit_batch.data.records import request_id_of as request_of
from diffedit_batch.report.candidates import Funnel, fate_of


def _index(report_dir) -> dict:
    text = (report_dir / "data" / "index.js").read_text()
    return json.loads(re.fullmatch(r"window\.DIFFEDIT_INDEX=(.*);\n", text, re.DOTALL).group(1))


def _rows(report_dir) -> list[dict]:
    rows = []
    for n in range(len(list((report_dir / "data").glob("rows-*.js")))):
        text = (report_dir / "data" / f"rows-{n}.js").read_text()
        rows += json.loads(re.fullmatch(rf"window\.__diffeditRows\({n},(.*)\);\n", text, re.DOTALL).group(1))
    return rows


def _candidate(request: str, k: int, status: str, reason: str | None = None, **fields) -> dict:
    return {"id": f"{request}~c{k}", "row_id": request, "status": status, "run_id": "r", "candidate": k,
            "candidate_settings": json.dumps({"guidance_scale": 7.5 + k, "inpaint_strength": 0.5 + k / 10}),
            "filter_reason": reason, "source_prompt": "a cat", "target_prompt": "a dog", "seed": 7,
            "clip_directional": 0.1 * k, "clip_image": 0.9, "mask_coverage": 0.2 + 0.1 * k, **fields}


def _candidate_records() -> list[dict]:
    return [
        _candidate("a", 0, "ok"),
        _candidate("a", 1, "filtered", "clip_directional 0.1 < min 0.2"),
        _candidate("a", 2, "filtered", "mask_coverage 0.9 > max 0.6"),
        _candidate("a", 3, "filtered", "ranked below keep (2 of 2 passing by clip_directional)"),
        _candidate("b", 0, "filtered", "clip_directional could not be computed (floor 0.2)"),
        _candidate("b", 1, "filtered", "clip_directional 0.05 < min 0.2"),
        _candidate("b", 2, "ok"),
        _candidate("b", 3, "error", error="engine failed", error_class="engine"),
        {"id": "c", "row_id": "c", "status": "error", "error": "missing", "error_class": "storage", "run_id": "r"},
    ]


def test_fates_name_the_score_of_each_reason_that_select_candidates_writes():
    scores = [{"clip_directional": 0.1, "mask_coverage": 0.3}, {"clip_directional": None, "mask_coverage": 0.3},
              {"clip_directional": 0.5, "mask_coverage": 0.9}, {"clip_directional": 0.6, "mask_coverage": 0.3},
              {"clip_directional": 0.7, "mask_coverage": 0.3}, {"clip_directional": 0.4, "mask_coverage": None}]
    verdicts = select_candidates(scores, keep=1, rank_by="clip_directional", floors={"clip_directional": 0.2},
                                 ceilings={"mask_coverage": 0.6})
    fates = [fate_of({"candidate": k, "status": "ok" if v.kept else "filtered", "filter_reason": v.reason})
             for k, v in enumerate(verdicts)]
    assert fates == ["below min clip_directional", "could not compute clip_directional", "above max mask_coverage",
                     "ranked below keep", "kept", "could not compute mask_coverage"]
    assert fate_of({"candidate": 0, "status": "filtered", "filter_reason": "something new"}) == \
        "filtered (other reason)"
    assert fate_of({"id": "x", "status": "ok"}) is None  # no candidate
    assert request_of("a~b~c12", 12) == "a~b" and request_of("odd", 3) == "odd"


def test_funnel_counts_generated_removed_by_each_floor_ranked_out_and_kept():
    funnel = Funnel()
    for record in _candidate_records():
        funnel.add(record)
    assert (funnel.generated, funnel.requests) == (8, 2)
    assert funnel.steps() == [
        ("failed (error)", 1, 7),
        ("below min clip_directional", 2, 5),
        ("above max mask_coverage", 1, 4),
        ("could not compute clip_directional", 1, 3),
        ("ranked below keep", 1, 2),
        ("kept", 2, 2),
    ]


def test_report_of_candidates_has_the_funnel_fates_and_request_keys(tmp_path):
    prefix = tmp_path / "job"
    write_record_part(str(prefix), _candidate_records(), part_name="r-1", schema=RECORD_SCHEMA)
    result = build_report(str(prefix), thumbnails=False, chunk_rows=3)
    assert result.records == 9
    report = prefix / "report"
    page = (report / "index.html").read_text()
    assert '<section id="candidates">' in page and "2 requests, 4 candidates each" in page
    funnel = re.findall(r'<tr class="fate"><td><a href="#fate=([^"]+)">[^<]+</a></td><td>(\d+)</td>.*?<td>(\d+)</td>'
                        r"</tr>", page)
    assert funnel == [("failed+(error)", "1", "7"), ("below+min+clip_directional", "2", "5"),
                      ("above+max+mask_coverage", "1", "4"), ("could+not+compute+clip_directional", "1", "3"),
                      ("ranked+below+keep", "1", "2"), ("kept", "2", "2")]
    # filtered candidates are neither ok nor failed: a tile of their own, not an error class
    assert "<b>2</b>ok" in page and "<b>2</b>failed" in page and "<b>5</b>filtered candidates" in page
    assert "<td>unknown</td><td>" not in page.split("<h2>Errors by class</h2>")[1].split("</table>")[0]
    assert '<select id="fate">' in page and '<div id="request" hidden>' in page

    index = _index(report)
    assert index["fates"] == ["kept", "below min clip_directional", "above max mask_coverage", "ranked below keep",
                              "could not compute clip_directional", "failed (error)"]
    assert [index["fates"][code] if code >= 0 else None for code in index["fate"]] == [
        "kept", "below min clip_directional", "above max mask_coverage", "ranked below keep",
        "could not compute clip_directional", "below min clip_directional", "kept", "failed (error)", None]
    keys = index["requestKeys"]
    assert len(set(keys[:4])) == 1 and len(set(keys[4:8])) == 1 and keys[0] != keys[4] and keys[8] == -1
    assert all(0 <= key < 2**31 for key in keys[:8])
    assert index["metrics"]["clip_directional"][1] == pytest.approx(0.1)
    assert index["metricLabels"]["clip_image"] == "CLIP input vs edit"

    rows = _rows(report)
    assert rows[1]["candidate"] == 1 and rows[1]["filter_reason"] == "clip_directional 0.1 < min 0.2"
    assert json.loads(rows[1]["candidate_settings"]) == {"guidance_scale": 8.5, "inpaint_strength": 0.6}
    assert "candidate" not in rows[8]  # a record that is no candidate keeps its old row
    assert page.count("CLIP directional") >= 1  # its histogram


def test_report_without_candidates_is_unchanged(tmp_path):
    prefix = tmp_path / "job"
    write_record_part(str(prefix), [
        {"id": "x", "status": "ok", "run_id": "r", "mask_coverage": 0.3},
        {"id": "y", "status": "error", "error_class": "engine", "run_id": "r"},
    ], part_name="r-1", schema=RECORD_SCHEMA)
    build_report(str(prefix), thumbnails=False)
    report = prefix / "report"
    page = (report / "index.html").read_text()
    assert 'id="candidates"' not in page and 'id="fate"' not in page and 'id="request"' not in page
    assert "filtered candidates" not in page and "CLIP directional" not in page
    index = _index(report)
    assert not {"fates", "fate", "requestKeys"} & set(index)
    assert set(index["metrics"]) == {"mask_coverage", "background_psnr", "background_ssim", "clip_target_score",
                                     "clip_source_score"}
    assert all(set(row) == {"id", "status", "error", "error_class", "source_prompt", "target_prompt", "seed",
                            "thumbs"} for row in _rows(report))


def test_candidates_with_kept_pictures_get_thumbnails_and_the_others_none(tmp_path):
    prefix = tmp_path / "job"
    for name in ("in", "a0", "a1", "m"):
        Image.new("RGB" if name != "m" else "L", (16, 16), 200).save(tmp_path / f"{name}.png")
    def pictures(name: str) -> dict:
        return {"image_uri": str(tmp_path / f"{name}.png"), "mask_uri": str(tmp_path / "m.png"),
                "source_image_uri": str(tmp_path / "in.png")}

    write_record_part(str(prefix), [
        _candidate("a", 0, "ok", **pictures("a0")),
        _candidate("a", 1, "filtered", "ranked below keep (2 of 2 passing by clip_directional)", **pictures("a1")),
        _candidate("a", 2, "filtered", "clip_directional 0.1 < min 0.2", source_image_uri=str(tmp_path / "in.png")),
    ], part_name="r-1", schema=RECORD_SCHEMA)
    result = build_report(str(prefix), workers=1)
    assert (result.thumbnails_made, result.thumbnails_failed) == (2, 0)
    rows = _rows(prefix / "report")
    assert rows[0]["thumbs"] and rows[1]["thumbs"] and rows[2]["thumbs"] is None
    assert (prefix / "report" / "thumbs" / f"{rows[1]['thumbs']}-edit.jpg").exists()


def _open_in_node(report_dir, view: str) -> dict:
    """What the page's script shows for the view ``view`` (a location hash), run in Node with a stand-in DOM."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH to run the page's script")
    done = subprocess.run([node, str(Path(__file__).with_name("page_in_node.js")), str(report_dir), view],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_page_shows_a_requests_candidates_side_by_side_and_filters_by_fate(tmp_path):
    prefix = tmp_path / "job"
    Image.new("RGB", (16, 16), 200).save(tmp_path / "p.png")
    pictures = {"image_uri": str(tmp_path / "p.png"), "mask_uri": str(tmp_path / "p.png"),
                "source_image_uri": str(tmp_path / "p.png")}
    records = _candidate_records()
    records[2].update(pictures)  # a~c2 filtered with its pictures kept (keep_rejected)
    records[0].update(pictures)
    records = records[:4] + [{**records[8], "id": f"pad{i}"} for i in range(5)] + records[4:8]  # b apart from a
    write_record_part(str(prefix), records, part_name="r-1", schema=RECORD_SCHEMA)
    build_report(str(prefix), chunk_rows=3, page_size=4, workers=1)
    report = prefix / "report"

    shown = _open_in_node(report, "compare=2")  # the record a~c2: request a
    assert shown["problem"] == "" and shown["view"] == "compare=2"
    assert not shown["request"]["hidden"]
    cards = shown["request"]["cards"]
    assert [(c["id"], c["className"]) for c in cards] == [
        ("a~c0", "candidate status-ok"), ("a~c1", "candidate status-filtered"), ("a~c2", "candidate status-filtered"),
        ("a~c3", "candidate status-filtered")]
    assert "clip_directional 0.1 < min 0.2" in cards[1]["text"] and "guidance_scale=8.500" in cards[1]["text"]
    assert "ranked below keep" in cards[3]["text"] and "keep_rejected keeps them" in cards[3]["text"]
    assert [len(c["images"]) for c in cards] == [2, 0, 2, 0]  # mask and edit where pictures exist
    assert shown["request"]["images"][0].endswith("-in.jpg")  # the request's input, once

    other = _open_in_node(report, "compare=11")  # b~c2, its candidates in other chunks than a's
    assert [c["id"] for c in other["request"]["cards"]] == ["b~c0", "b~c1", "b~c2", "b~c3"]
    assert "1 kept" in other["request"]["text"]
    assert _open_in_node(report, "compare=5")["request"]["hidden"]  # no candidate: no view

    below = _open_in_node(report, "fate=below+min+clip_directional")
    assert [c["id"] for c in below["grid"]] == ["a~c1", "b~c1"] and below["request"]["hidden"]
    assert "below min clip_directional" in below["fateOptions"]
