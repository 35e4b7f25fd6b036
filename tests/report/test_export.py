"""The training export: Parquet parts that Hugging Face `datasets` loads as an image dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset

pytestmark = pytest.mark.slow


def test_export_loads_in_datasets_with_images_equal_to_the_job_outputs(report_job, tmp_path):
    datasets = pytest.importorskip("datasets")
    result = export_dataset(str(report_job.prefix), str(tmp_path / "export"), part_bytes=1)  # a part per edit
    assert (result.rows, len(result.parts), result.skipped, result.sources_missing) == (3, 3, 0, 0)
    features = json.loads(pq.read_schema(result.parts[0]).metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"} and features["background_psnr"]["dtype"] == "float64"

    dataset = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "export" / "part-*.parquet"), split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert sorted(dataset["id"]) == ["a", "b", "c"]
    row = next(r for r in dataset if r["id"] == "b")
    record = report_job.records["b"]
    assert isinstance(row["image"], Image.Image)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(record["image_uri"])))
    assert np.array_equal(np.asarray(row["mask"]), np.asarray(Image.open(record["mask_uri"])))
    assert np.array_equal(np.asarray(row["source_image"]), np.asarray(Image.open(report_job.folder / "coffee.png")))
    assert row["target_prompt"] == "a cup of tea" and row["seed"] == 2
    assert row["background_ssim"] == pytest.approx(record["background_ssim"])
    assert row["clip_target_score"] == pytest.approx(record["clip_target_score"])


def test_re_export_replaces_the_earlier_parts(report_job, tmp_path):
    out = tmp_path / "export"
    export_dataset(str(report_job.prefix), str(out), part_bytes=1)
    result = export_dataset(str(report_job.prefix), str(out), include_source=False)
    assert [p.name for p in sorted(out.glob("*.parquet"))] == ["part-00000.parquet"]
    table = pq.read_table(result.parts[0])
    assert table.num_rows == 3 and table["source_image"].null_count == 3
