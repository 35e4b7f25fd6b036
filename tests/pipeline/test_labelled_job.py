"""A labelled dataset through the real job and back: datasets' Parquet in, labels in every record and output,
the export read back by datasets with the same ClassLabel (issue 35)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from diffedit_batch.data.export import export_dataset
from diffedit_batch.pipeline import run_job
from diffedit_batch.testing.labelled import CLASSES, labelled_rows, picture, wds_sample, write_shard

from .conftest import read_records

pytestmark = pytest.mark.slow


def test_a_datasets_dataset_goes_in_and_its_export_comes_back(ray_local, job_config, tmp_path):
    import datasets

    rows = labelled_rows(5)
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES)),
        "source_prompt": datasets.Value("string"), "target_prompt": datasets.Value("string"),
    })
    dataset = datasets.Dataset.from_dict(
        {"image": [{"bytes": row["image"], "path": None} for row in rows], "label": [row["label"] for row in rows],
         "source_prompt": [row["source_prompt"] for row in rows], "target_prompt": [row["target_prompt"] for row in rows]},
        features=features)
    dataset.to_parquet(str(tmp_path / "train.parquet"))
    output = tmp_path / "out"
    config = job_config("input.carry_columns=[label]", "output.format=parquet")
    summary = run_job(config, str(tmp_path / "train.parquet"), str(output))
    assert (summary.ok, summary.failed) == (5, 0)
    records = {record["id"]: record for record in read_records(output)}
    assert sorted(records) == [f"train.parquet:{k}" for k in range(5)]
    for k, record in enumerate(records[f"train.parquet:{k}"] for k in range(5)):
        assert json.loads(record["carried"]) == {"label": k % 3}  # a ClassLabel stays its index
        assert (record["source_id"], record["synthetic"]) == (f"train.parquet:{k}", True)
    shard = pq.read_table(next((output / "shards").glob("*.parquet")))
    assert sorted(shard.column("label").to_pylist()) == sorted(k % 3 for k in range(5))
    shard_features = json.loads(shard.schema.metadata[b"huggingface"])["info"]["features"]
    assert shard_features["label"] == {"names": list(CLASSES), "_type": "ClassLabel"}

    # resume: nothing to do again, the carried columns kept through the run's compaction
    again = run_job(config, str(tmp_path / "train.parquet"), str(output))
    assert (again.ok, again.skipped) == (0, 5)
    assert all(json.loads(r["carried"]) == {"label": int(r["id"][-1]) % 3} for r in read_records(output))

    result = export_dataset(str(output), str(tmp_path / "export"), with_sources=True)
    assert (result.rows, result.sources) == (10, 5)
    loaded = datasets.load_dataset("parquet", data_files=result.parts, split="train")
    assert loaded.features["label"] == features["label"]  # the same ClassLabel, names and all
    assert {name: loaded.features[name] for name in ("source_prompt", "target_prompt")} == {
        name: features[name] for name in ("source_prompt", "target_prompt")}
    sources = loaded.filter(lambda row: not row["synthetic"])
    assert sorted(sources["id"]) == [f"train.parquet:{k}" for k in range(5)]
    assert all(row["mask"] is None for row in sources)
    first = sources.filter(lambda row: row["id"] == "train.parquet:0")[0]
    assert first["image"].tobytes() == datasets.Image().decode_example({"bytes": rows[0]["image"], "path": None}
                                                                         ).tobytes()


def test_webdataset_shards_in_and_out_with_their_classes(ray_local, job_config, tmp_path):
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "000000.tar", [wds_sample("000000000", 0, label=1),
                                                     wds_sample("000000001", 1, label=0, image=False)])
    write_shard(tmp_path / "shards" / "000001.tar", [wds_sample("000000002", 2, label=1)])
    output = tmp_path / "out"
    config = job_config("job.mode=noop", "input.carry_columns=[label, text]", "input.label_names=[cat, dog]",
                        "output.format=webdataset")
    summary = run_job(config, str(tmp_path / "shards"), str(output))
    records = {record["id"]: record for record in read_records(output)}
    assert records["000000001"]["status"] == "error" and records["000000001"]["error_class"] == "invalid_row"
    assert "has no picture" in records["000000001"]["error"]
    assert summary.ok == 2 and records["000000002"]["status"] == "ok"
    members = {}
    for shard in (output / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:
            members.update({info.name: tar.extractfile(info).read() for info in tar})
    [cls] = [name for name in members if name.endswith(".cls") and "000000002" in name]
    assert members[cls] == b"1"
    meta = json.loads(members[cls[:-4] + ".json"])
    assert (meta["label"], meta["text"], meta["source_id"]) == (1, "caption 2", "000000002")


def test_an_image_folder_runs_with_its_folder_classes(ray_local, job_config, tmp_path):
    root = tmp_path / "pets"
    for cls, colour in (("dog", "red"), ("cat", "blue")):
        (root / cls).mkdir(parents=True)
        (root / cls / f"{colour}.png").write_bytes(picture(colour))
    (root / "metadata.jsonl").write_text("".join(
        json.dumps({"file_name": name, "source_prompt": "a pet", "target_prompt": "a pet in the snow"}) + "\n"
        for name in ("dog/red.png", "cat/blue.png")))
    output = tmp_path / "out"
    summary = run_job(job_config("job.mode=noop", "input.carry_columns=[label]"), str(root), str(output))
    assert summary.ok == 2
    records = {record["id"]: record for record in read_records(output)}
    assert {name: json.loads(r["carried"])["label"] for name, r in records.items()} == {"cat/blue.png": 0,
                                                                                         "dog/red.png": 1}
    folder = tmp_path / "folder"
    export_dataset(str(output), str(folder), export_format="imagefolder")
    assert sorted(p.relative_to(folder).parts[0] for p in folder.rglob("*.png")) == ["cat", "dog"]
