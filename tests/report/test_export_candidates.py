"""The export of a run with candidates takes the kept (ok) candidates only: a filtered one is left out in both
formats, even when its pictures were written (`candidates.keep_rejected`). No Ray, no model."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.records import RECORD_SCHEMA, write_record_part


@pytest.fixture
def candidates_job(tmp_path):
    prefix = tmp_path / "job"
    colors = {"in": (10, 10, 10), "c0": (200, 0, 0), "c1": (0, 200, 0), "m": (255, 255, 255)}
    for name, color in colors.items():
        Image.new("RGB", (8, 8), color).save(tmp_path / f"{name}.png")
    uri = lambda name: str(tmp_path / f"{name}.png")  # noqa: E731
    common = {"row_id": "a", "run_id": "r", "source_prompt": "a cat", "target_prompt": "a dog", "seed": 1,
              "source_image_uri": uri("in"), "mask_uri": uri("m")}
    write_record_part(str(prefix), [
        {**common, "id": "a~c0", "status": "ok", "candidate": 0, "image_uri": uri("c0")},
        # keep_rejected: a filtered candidate with its edit and mask written
        {**common, "id": "a~c1", "status": "filtered", "candidate": 1, "image_uri": uri("c1"),
         "filter_reason": "ranked below keep (2 of 2 passing by clip_directional)"},
        {**common, "id": "a~c2", "status": "filtered", "candidate": 2, "mask_uri": None,
         "filter_reason": "clip_directional 0.1 < min 0.2"},
    ], part_name="r-1", schema=RECORD_SCHEMA)
    return prefix


def _color(image: dict) -> tuple:
    with Image.open(io.BytesIO(image["bytes"])) as picture:
        return picture.convert("RGB").getpixel((0, 0))


def test_diffedit_export_leaves_filtered_candidates_out(candidates_job, tmp_path):
    result = export_dataset(str(candidates_job), str(tmp_path / "out"))
    assert (result.rows, result.skipped) == (1, 0)
    rows = pq.read_table(result.parts[0]).to_pylist()
    assert [row["id"] for row in rows] == ["a~c0"] and _color(rows[0]["image"]) == (200, 0, 0)


def test_instruct_pix2pix_export_leaves_filtered_candidates_out(candidates_job, tmp_path):
    result = export_dataset(str(candidates_job), str(tmp_path / "out"), export_format="instruct-pix2pix")
    assert (result.rows, result.skipped) == (1, 0)
    rows = pq.read_table(result.parts[0]).to_pylist()
    assert [_color(row["edited_image"]) for row in rows] == [(200, 0, 0)] and rows[0]["edit_prompt"] == "a dog"
