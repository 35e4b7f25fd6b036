"""The job's stages on their own, without Ray: expand's claims and validation, the registry, the edit retry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from diffedit_batch.data.records import write_record_part
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.engine.settings import EditSettings
from diffedit_batch.pipeline.registry import DONE, DUPLICATE, NEW, EditRegistry
from diffedit_batch.pipeline.rows import to_table
from diffedit_batch.pipeline.stages.edit import EditStage
from diffedit_batch.pipeline.stages.expand import expand_requests
from diffedit_batch.seeds import derive_seed

OPTIONS = StorageOptions()


def earlier_records(prefix, **statuses):
    records = [{"id": edit_id, "row_id": edit_id, "status": status, "run_id": "earlier"}
               for edit_id, status in statuses.items()]
    write_record_part(str(prefix), records, OPTIONS, part_name="earlier")


def test_registry_claims_new_done_and_duplicate_ids(tmp_path):
    earlier_records(tmp_path, a="ok", b="error")
    registry = EditRegistry(str(tmp_path), OPTIONS)
    assert registry.claim(["a", "b", "c", "c", None, "a"]) == [DONE, NEW, NEW, DUPLICATE, NEW, DONE]
    assert registry.claim(["b", "d"]) == [DUPLICATE, NEW]  # claims last for the whole run, across calls
    assert registry.skipped_count() == 1  # "a", however often it comes back
    assert registry.previously_recorded_not_ok() == {"b"}


def manifest_batch(rows: list[dict]) -> pa.Table:
    schema = pa.schema([("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string()),
                        ("target_prompt", pa.string()), ("target_prompts", pa.list_(pa.string())),
                        ("seed", pa.uint64())])
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def test_expand_drops_done_edits_marks_duplicates_and_validates(tmp_path):
    earlier_records(tmp_path, done="ok")
    registry = EditRegistry(str(tmp_path), OPTIONS)
    batch = manifest_batch([
        {"id": "done", "image": "a.png", "source_prompt": "a", "target_prompt": "b"},
        {"id": "new", "image": "a.png", "source_prompt": "a", "target_prompt": "b"},
        {"id": "multi", "image": "/abs/b.png", "source_prompt": "a", "target_prompts": ["x", "y"], "seed": 7},
        {"id": "new", "image": "c.png", "source_prompt": "a", "target_prompt": "b"},
        {"id": "no-target", "image": "a.png", "source_prompt": "a"},
        {"id": "huge-seed", "image": "a.png", "source_prompt": "a", "target_prompt": "b", "seed": 2**64 - 1},
    ])
    rows = expand_requests(batch, registry=registry, base_dir="/data/in", job_seed=3).to_pylist()
    by_id = {}
    for row in rows:
        by_id.setdefault(row["edit_id"], []).append(row)
    assert "done" not in by_id
    first, later = by_id["new"]
    assert first["status"] == Status.PENDING and first["source_image_uri"] == "/data/in/a.png"
    assert first["seed"] == derive_seed(3, "new")
    assert (later["status"], later["error_class"]) == (Status.DUPLICATE, ErrorClass.DUPLICATE_ID)
    assert [r["target_prompt"] for r in by_id["multi#0"] + by_id["multi#1"]] == ["x", "y"]
    assert {r["seed"] for r in by_id["multi#0"] + by_id["multi#1"]} == {7}
    assert by_id["no-target"][0]["error_class"] == ErrorClass.INVALID_ROW
    [huge] = by_id["huge-seed"]  # an unsigned seed past int64 is the row's error, not the job's crash
    assert huge["error_class"] == ErrorClass.INVALID_ROW and "2**63" in huge["error"] and huge["seed"] is None


@dataclass
class FakeResult:
    image: Image.Image
    mask: np.ndarray
    truncated_prompts: tuple = ()


class FlakyEngine:
    """A stand-in engine that fails any call holding the target prompt "boom", and records its calls."""

    vae_scale_factor = 8

    def __init__(self):
        self.calls: list[list[str]] = []

    def edit(self, images, sources, targets, seeds, settings=None, inversion_prompts=None):
        self.calls.append(list(targets))
        if "boom" in targets:
            raise RuntimeError("the model broke on this row")
        return [FakeResult(image, np.ones((image.height // 8, image.width // 8), np.uint8)) for image in images]


def test_edit_stage_retries_a_failed_batch_row_by_row():
    engine = FlakyEngine()
    stage = EditStage(None, EditSettings(), engine=engine)
    picture = np.full((16, 24, 3), 100, np.uint8).tobytes()
    rows = [{"edit_id": name, "status": Status.PENDING, "model_width": 24, "model_height": 16, "pixels": picture,
             "source_prompt": "a", "target_prompt": name, "seed": 1, "inversion_prompt": None}
            for name in ("good", "boom", "fine")]
    rows.append({"edit_id": "earlier-error", "status": Status.ERROR, "error": "bad", "target_prompt": "x"})
    out = {row["edit_id"]: row for row in stage(to_table(rows)).to_pylist()}
    assert engine.calls == [["good", "boom", "fine"], ["good"], ["boom"], ["fine"]]
    assert out["boom"]["error_class"] == ErrorClass.ENGINE and "the model broke" in out["boom"]["error"]
    assert out["boom"]["pixels"] is None  # a failed row stops carrying its picture
    for name in ("good", "fine"):
        assert out[name]["status"] == Status.PENDING and out[name]["edited"] == picture
        assert (out[name]["mask_width"], out[name]["mask_height"], out[name]["mask_coverage"]) == (3, 2, 1.0)
    assert out["earlier-error"]["error"] == "bad" and out["earlier-error"]["edited"] is None
