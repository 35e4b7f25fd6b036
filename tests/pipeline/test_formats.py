"""Output formats end to end: webdataset and Parquet shards that training stacks read, and readers that follow."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.outputs import OutputReader, split_member
from diffedit_batch.pipeline import run_job
from diffedit_batch.report import build_report

from .conftest import read_records
from .test_job import EXAMPLE_EDITS

pytestmark = pytest.mark.slow


def test_webdataset_shards_hold_complete_training_pairs_and_every_reader_follows(
        ray_local, job_config, example_copy, tmp_path):
    wds = pytest.importorskip("webdataset")
    datasets = pytest.importorskip("datasets")
    output = tmp_path / "out"
    config = job_config("output.format=webdataset", "output.shard_rows=3", "job.batch_size=2")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (summary.ok, summary.failed) == (8, 0)
    assert not (output / "images").exists() and not (output / "masks").exists()
    shards = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    assert 3 <= len(shards) <= 8  # at most shard_rows edits a shard
    samples = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(EXAMPLE_EDITS) and len(samples) == 8
    for record in records:
        shard, member = split_member(record["image_uri"])
        assert shard in shards and split_member(record["mask_uri"])[0] == shard
        sample = samples[member.split(".")[0]]
        meta = json.loads(sample["json"])
        assert (meta["id"], meta["target_prompt"], meta["seed"]) == (record["id"], record["target_prompt"],
                                                                     record["seed"])
        assert meta["mask_coverage"] == pytest.approx(record["mask_coverage"])
        edit = Image.open(io.BytesIO(sample["png"]))
        mask = Image.open(io.BytesIO(sample["mask.png"]))
        assert edit.size == mask.size == (record["width"], record["height"]) and mask.mode == "L"
        source = Image.open(io.BytesIO(sample["src.jpg"]))  # the picture's own bytes: a complete training pair
        assert source.size == edit.size
        assert sample["src.jpg"] == open(record["source_image_uri"], "rb").read()

    # readers follow: the report's thumbnails and both exports read the members through the records
    report = build_report(str(output), workers=2)
    assert (report.records, report.thumbnails_made, report.thumbnails_failed) == (8, 8, 0)
    pix2pix = export_dataset(str(output), str(tmp_path / "pix2pix"), export_format="instruct-pix2pix")
    assert (pix2pix.rows, pix2pix.skipped) == (8, 0)
    dataset = datasets.load_dataset("parquet", data_files=str(tmp_path / "pix2pix" / "*.parquet"), split="train",
                                    cache_dir=str(tmp_path / "hf"))
    assert dataset.column_names == ["input_image", "edit_prompt", "edited_image"]
    row = next(r for r in dataset if r["edit_prompt"] == "a cup of tea")
    assert isinstance(row["input_image"], Image.Image) and row["edited_image"].size == row["input_image"].size
    by_prompt = {r["target_prompt"]: r for r in records}
    edited = OutputReader().read(by_prompt["a cup of tea"]["image_uri"])
    assert np.array_equal(np.asarray(row["edited_image"]), np.asarray(Image.open(io.BytesIO(edited))))

    again = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert (again.ok, again.skipped) == (0, 8)
    assert sorted(str(p) for p in (output / "shards").glob("*.tar")) == shards  # none written, none removed


def test_parquet_shards_load_in_datasets_and_jpeg_edits_are_an_option(ray_local, job_config, example_copy, tmp_path):
    datasets = pytest.importorskip("datasets")
    output = tmp_path / "out"
    config = job_config("output.format=parquet", "output.image_format=jpg", "output.include_source=false")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(output))
    assert summary.ok == 8
    dataset = datasets.load_dataset("parquet", data_files=str(output / "shards" / "*.parquet"), split="train",
                                    cache_dir=str(tmp_path / "hf"))
    assert sorted(dataset["id"]) == sorted(EXAMPLE_EDITS)
    assert all(source is None for source in dataset["source_image"])
    records = {r["id"]: r for r in read_records(output)}
    for row in dataset:
        record = records[row["id"]]
        assert isinstance(row["image"], Image.Image) and row["image"].format == "JPEG"
        assert row["image"].size == row["mask"].size == (record["width"], record["height"])
        assert split_member(record["image_uri"])[1] == f"{row['__key__']}.jpg"
        assert row["background_psnr"] == pytest.approx(record["background_psnr"])
