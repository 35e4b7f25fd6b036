"""The export's settings filter: the edits made under the current settings, or all of them (no Ray, no model)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.records import write_record_part


def test_export_takes_the_current_settings_unless_asked_for_all(tmp_path):
    """An output that kept edits under other settings (--on-settings-change keep) exports only the current ones."""
    prefix = tmp_path / "job"
    (prefix / "runs").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / f"{name}.png")
    (prefix / "runs" / "20260101T000000Z-old.json").write_text(json.dumps({"settings": {"old-print": {}}}))
    (prefix / "runs" / "20260102T000000Z-new.json").write_text(json.dumps({"settings": {"new-print": {}}}))
    write_record_part(str(prefix), [
        {"id": name, "status": "ok", "run_id": "r", "image_uri": str(tmp_path / f"{name}.png"),
         "mask_uri": str(tmp_path / f"{name}.png"), "source_image_uri": str(tmp_path / f"{name}.png"),
         "settings_fingerprint": fingerprint}
        for name, fingerprint in (("a", "old-print"), ("b", "new-print"), ("c", None))  # c: before fingerprints
    ], part_name="r-1")
    current = export_dataset(str(prefix), str(tmp_path / "current"))
    assert (current.rows, current.other_settings) == (1, 2)
    exported = pq.read_table(tmp_path / "current" / "part-00000.parquet", columns=["id", "settings_fingerprint"])
    assert exported.to_pylist() == [{"id": "b", "settings_fingerprint": "new-print"}]
    every = export_dataset(str(prefix), str(tmp_path / "all"), settings="all")
    assert (every.rows, every.other_settings) == (3, 0)
