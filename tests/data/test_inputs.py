"""Labelled inputs read into the job's one input row: HF Parquet, WebDataset shards, ImageFolder trees (issue 35)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffedit_batch.config import InputConfig
from diffedit_batch.data.inputs import INPUT_ROW_SCHEMA, inspect_input, read_input_rows, read_source_image
from diffedit_batch.data.labels import class_names_of, features_of, label_problem
from diffedit_batch.data.manifest import ManifestError, expand_edits, validate_request
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.testing.labelled import (
    CLASSES,
    labelled_rows,
    picture,
    wds_sample,
    write_hf_parquet,
    write_shard,
)

OPTIONS = StorageOptions()


def _rows(manifest) -> list[dict]:
    files = pa.table({"file": [f.uri for f in manifest.files], "first_row": [f.first_row for f in manifest.files]})
    tables = list(read_input_rows(files, options=OPTIONS, spec=manifest.spec, rows_per_block=2))
    assert all(table.schema == INPUT_ROW_SCHEMA for table in tables)
    return [row for table in tables for row in table.to_pylist()]


# --- Parquet -------------------------------------------------------------------------------------------------


def test_a_datasets_parquet_file_is_read_without_its_pictures(tmp_path):
    rows = labelled_rows(5)
    path = write_hf_parquet(tmp_path / "train.parquet", rows)
    manifest = inspect_input(str(path), InputConfig(carry_columns=("label",)))
    spec = manifest.spec
    assert (spec.format, spec.image, spec.has_id, spec.embedded) == ("parquet", "struct", False, True)
    assert spec.class_names == {"label": list(CLASSES)}  # from the huggingface schema metadata
    assert spec.features == {"label": {"names": list(CLASSES), "_type": "ClassLabel"}}
    read = _rows(manifest)
    # no id column: a row's id is its place; its picture a locator into the file, read again only when edited
    assert [row["id"] for row in read] == [f"train.parquet:{k}" for k in range(5)]
    assert [row["image"] for row in read] == [f"{path}#row={k}" for k in range(5)]
    assert [json.loads(row["carried"]) for row in read] == [{"label": k % 3} for k in range(5)]
    assert all(row["input_error"] is None for row in read)
    assert read_source_image(read[3]["image"]) == rows[3]["image"]


def test_binary_and_path_only_images(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(picture("red"))
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "id": ["embedded", "by-path", "neither"],
        "image": pa.array([{"bytes": picture("blue"), "path": "x.png"}, {"bytes": None, "path": "pics/a.png"},
                           {"bytes": None, "path": None}], image),
        "target_prompt": ["a", "b", "c"],
    })
    pq.write_table(table, tmp_path / "m.parquet")
    read = {row["id"]: row for row in _rows(inspect_input(str(tmp_path / "m.parquet")))}
    assert read["embedded"]["image"] == f"{tmp_path / 'm.parquet'}#row=0"  # bytes win over the path
    assert read["by-path"]["image"] == str(tmp_path / "pics" / "a.png")  # a relative path resolves as a URI does
    assert read["neither"]["image"] is None
    assert "neither" in read["neither"]["input_error"] or "both null" in read["neither"]["input_error"]
    [request] = expand_edits(read["neither"])
    assert validate_request(request) == read["neither"]["input_error"]  # its record is an invalid_row naming it

    pq.write_table(pa.table({"id": ["b"], "image": pa.array([picture("red")], pa.binary()), "target_prompt": ["x"]}),
                   tmp_path / "b.parquet")
    manifest = inspect_input(str(tmp_path / "b.parquet"))
    assert manifest.spec.image == "binary"
    [row] = _rows(manifest)
    assert read_source_image(row["image"]) == picture("red")


def test_a_class_index_out_of_range_is_the_rows_error(tmp_path):
    path = write_hf_parquet(tmp_path / "t.parquet", labelled_rows(3))
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[b"huggingface"])
    metadata["info"]["features"]["label"]["names"] = ["cat", "dog"]  # index 2 has no name now
    pq.write_table(table.replace_schema_metadata({b"huggingface": json.dumps(metadata).encode()}), path)
    read = _rows(inspect_input(str(path)))
    assert [row["input_error"] for row in read[:2]] == [None, None]
    assert read[2]["input_error"] == "label 2 is out of range: its class names are 0..1 (cat, dog)"


def test_label_names_name_a_plain_label_column(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "image": ["a.png"], "target_prompt": ["x"], "label": [1],
                             "extra": ["kept"], "blob": [b"x"]}), tmp_path / "m.parquet")
    manifest = inspect_input(str(tmp_path / "m.parquet"), InputConfig(carry_columns=("*",),
                                                                      label_names=("cat", "dog")))
    assert manifest.spec.class_names == {"label": ["cat", "dog"]}
    assert manifest.spec.carry == ("label", "extra")  # "*": every column the job does not use (binary cannot travel)
    assert manifest.spec.features["label"] == {"names": ["cat", "dog"], "_type": "ClassLabel"}
    [row] = _rows(manifest)
    assert json.loads(row["carried"]) == {"label": 1, "extra": "kept"}
    with pytest.raises(ManifestError, match="input.carry_columns names nope"):
        inspect_input(str(tmp_path / "m.parquet"), InputConfig(carry_columns=("nope",)))
    with pytest.raises(ManifestError, match="'blob' has type binary, which cannot be carried"):
        inspect_input(str(tmp_path / "m.parquet"), InputConfig(carry_columns=("blob",)))


# --- WebDataset -----------------------------------------------------------------------------------------------


def test_webdataset_shards_are_read_a_sample_per_key(tmp_path):
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "000000.tar", [
        wds_sample("000000000", 0, label=1, objects={"bbox": [[1, 2, 3, 4]]}),
        wds_sample("000000001", 1, label=2, image=False),
    ])
    write_shard(tmp_path / "shards" / "000001.tar", [wds_sample("000000002", 2, label=7)])
    manifest = inspect_input(str(tmp_path / "shards"), InputConfig(carry_columns=("*",),
                                                                   label_names=("cat", "dog", "fox")))
    assert (manifest.spec.format, manifest.spec.image) == ("webdataset", "member")
    read = _rows(manifest)
    assert [row["id"] for row in read] == ["000000000", "000000001", "000000002"]
    first, no_picture, bad_label = read
    assert first["image"] == f"{tmp_path / 'shards' / '000000.tar'}#000000000.jpg"
    assert first["source_prompt"] == "a photo of a thing"  # .json fields are columns
    assert json.loads(first["carried"]) == {"label": 1, "objects": {"bbox": [[1, 2, 3, 4]]}, "text": "caption 0"}
    assert first["input_error"] is None
    assert no_picture["image"] is None and "has no picture" in no_picture["input_error"]
    assert bad_label["input_error"].startswith("label 7 is out of range")
    # the second shard's rows are numbered after the first's, whatever its length
    assert read[2]["row_index"] > read[1]["row_index"] > read[0]["row_index"]
    assert read_source_image(first["image"]) == wds_sample("000000000", 0)["000000000.jpg"]


def test_a_shard_with_a_key_split_apart_stops_the_run_naming_it(tmp_path):
    a, b = wds_sample("a", 0), wds_sample("b", 1)
    split = {"a.jpg": a["a.jpg"], "b.jpg": b["b.jpg"], "a.json": a["a.json"]}
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "0-good.tar", [wds_sample("x", 0)])
    write_shard(tmp_path / "shards" / "1-bad.tar", [split])
    with pytest.raises(ManifestError, match=r"1-bad.tar: the members of key 'a' are not together"):
        inspect_input(str(tmp_path / "shards" / "1-bad.tar"))  # the first shard is read before any work
    manifest = inspect_input(str(tmp_path / "shards"))
    with pytest.raises(ManifestError, match=r"1-bad.tar: the members of key 'a' are not together"):
        _rows(manifest)  # a later one by the plan's read, which stops the run (exit 2) before any edit


def test_a_tar_that_is_not_a_tar_is_a_one_line_error(tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ManifestError) as caught:
        inspect_input(str(tmp_path / "junk.tar"))
    assert "junk.tar is not a tar file" in str(caught.value) and "\n" not in str(caught.value)


# --- ImageFolder ------------------------------------------------------------------------------------------------


def test_an_image_folder_gives_labels_from_sorted_folders_and_merges_metadata(tmp_path):
    for cls, colour in (("dog", "red"), ("cat", "blue"), ("cat", "green")):
        (tmp_path / cls).mkdir(exist_ok=True)
        (tmp_path / cls / f"{colour}.png").write_bytes(picture(colour))
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "cat/blue.png", "source_prompt": "a cat", "target_prompt": "a lion", "where": "x"})
        + "\n")
    manifest = inspect_input(str(tmp_path), InputConfig(carry_columns=("*",)))
    assert manifest.spec.format == "imagefolder"
    assert manifest.spec.class_names == {"label": ["cat", "dog"]}  # sorted, as torchvision numbers them
    read = {row["id"]: row for row in _rows(manifest)}
    assert sorted(read) == ["cat/blue.png", "cat/green.png", "dog/red.png"]
    assert read["cat/blue.png"]["image"] == str(tmp_path / "cat" / "blue.png")
    assert read["cat/blue.png"]["target_prompt"] == "a lion"
    assert json.loads(read["cat/blue.png"]["carried"]) == {"label": 0, "where": "x"}
    assert json.loads(read["dog/red.png"]["carried"]) == {"label": 1, "where": None}


def test_a_folder_holding_two_kinds_stops_naming_them(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "image": ["a.png"], "target_prompt": ["x"]}), tmp_path / "m.parquet")
    write_shard(tmp_path / "s.tar", [wds_sample("a", 0)])
    with pytest.raises(ManifestError, match=r"more than one kind of input: parquet \(m.parquet\); "
                                            r"webdataset \(s.tar\)"):
        inspect_input(str(tmp_path))
    # told which, it reads that kind
    assert inspect_input(str(tmp_path), InputConfig(format="parquet")).spec.format == "parquet"


# --- labels ------------------------------------------------------------------------------------------------------


def test_class_names_come_from_metadata_then_config_then_folders():
    features = {"label": {"names": ["a", "b"], "_type": "ClassLabel"}, "x": {"dtype": "int64", "_type": "Value"}}
    assert class_names_of(features=features, label_names=["z"], folders=["q"]) == {"label": ["a", "b"]}
    assert class_names_of(label_names=["z", "y"], folders=["q"]) == {"label": ["z", "y"]}
    assert class_names_of(folders=["q", "b"]) == {"label": ["b", "q"]}
    assert label_problem("label", 2, ["a", "b"]).startswith("label 2 is out of range")
    assert label_problem("label", None, ["a"]) is None and label_problem("label", 1, ["a", "b"]) is None
    schema = pa.schema([("label", pa.int64()), ("objects", pa.struct([("bbox", pa.list_(pa.list_(pa.float32())))]))])
    assert features_of(schema, None, {"label": ["a"]}) == {
        "label": {"names": ["a"], "_type": "ClassLabel"},
        "objects": {"bbox": {"feature": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "List"},
                             "_type": "List"}},
    }


# --- object storage ----------------------------------------------------------------------------------------------


def test_shards_and_datasets_parquet_on_object_storage(s3_server, tmp_path):
    from diffedit_batch.data.storage import write_bytes_atomic

    bucket, options = s3_server.make_bucket(), s3_server.options
    write_shard(tmp_path / "0.tar", [wds_sample("k0", 0, label=1), wds_sample("k1", 1)])
    write_bytes_atomic(f"{bucket}/shards/0.tar", (tmp_path / "0.tar").read_bytes(), options)
    manifest = inspect_input(f"{bucket}/shards", InputConfig(carry_columns=("label",)), options)
    files = pa.table({"file": [f.uri for f in manifest.files], "first_row": [f.first_row for f in manifest.files]})
    rows = [row for t in read_input_rows(files, options=options, spec=manifest.spec) for row in t.to_pylist()]
    assert [row["id"] for row in rows] == ["k0", "k1"] and json.loads(rows[0]["carried"]) == {"label": 1}
    assert read_source_image(rows[1]["image"], options) == wds_sample("k1", 1)["k1.jpg"]

    pictures = labelled_rows(2)
    write_hf_parquet(tmp_path / "t.parquet", pictures)
    write_bytes_atomic(f"{bucket}/hf/t.parquet", (tmp_path / "t.parquet").read_bytes(), options)
    manifest = inspect_input(f"{bucket}/hf", None, options)
    assert manifest.spec.class_names == {"label": list(CLASSES)}
    files = pa.table({"file": [f.uri for f in manifest.files], "first_row": [0]})
    rows = [row for t in read_input_rows(files, options=options, spec=manifest.spec) for row in t.to_pylist()]
    assert [row["id"] for row in rows] == ["t.parquet:0", "t.parquet:1"]
    assert read_source_image(rows[1]["image"], options) == pictures[1]["image"]


def test_a_manifest_of_uris_reads_as_before(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "image": ["pics/a.png", "s3://bucket/b.png"],
                             "target_prompts": [["x", "y"], None], "seed": pa.array([1, None], pa.int32())}),
                   tmp_path / "m.parquet")
    manifest = inspect_input(str(tmp_path / "m.parquet"))
    assert (manifest.spec.image, manifest.spec.embedded, manifest.spec.carry) == ("uri", False, ())
    rows = _rows(manifest)
    assert [(r["id"], r["image"], r["target_prompts"], r["seed"], r["row_index"], r["carried"]) for r in rows] == [
        ("a", str(tmp_path / "pics" / "a.png"), ["x", "y"], 1, 0, None), ("b", "s3://bucket/b.png", None, None, 1, None)]


def test_every_format_gives_the_recipe_its_columns_region_and_class_rank(tmp_path):
    """Prompt templates, balance and regions read columns of any input format: a shard's `.cls` and `.json` fields
    reach the recipe (`fields`), each row gets its place in its class counted on from its file's offsets, and a
    picture embedded in a shard is identified by its shard (data.sources)."""
    from diffedit_batch.data.augment import class_key
    from diffedit_batch.data.sources import holder_of

    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "000000.tar", [
        wds_sample("000000000", 0, label=1, objects={"bbox": [[1, 2, 3, 4]]}),
        wds_sample("000000001", 1, label=1),
        wds_sample("000000002", 2, label=0),
    ])
    manifest = inspect_input(str(tmp_path / "shards"), InputConfig(label_names=("cat", "dog")))
    files = pa.table({"file": [f.uri for f in manifest.files], "first_row": [f.first_row for f in manifest.files],
                      "class_offsets": [json.dumps({class_key(1): 5})]})
    rows = [row for table in read_input_rows(files, options=OPTIONS, spec=manifest.spec,
                                             extra_columns=("label", "objects"), class_column="label")
            for row in table.to_pylist()]
    assert [json.loads(row["fields"])["label"] for row in rows] == [1, 1, 0]
    assert json.loads(rows[0]["fields"])["objects"] == {"bbox": [[1, 2, 3, 4]]}
    assert [row["class_rank"] for row in rows] == [5, 6, 0]
    assert holder_of(rows[0]["image"]) == str(tmp_path / "shards" / "000000.tar")


def test_a_region_mask_struct_with_neither_bytes_nor_path_is_the_rows_input_error(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b", "c"], "image": ["x.png"] * 3, "target_prompt": ["t"] * 3,
        "region_mask": [{"bytes": None, "path": None}, {"bytes": b"\x89PNG", "path": "m.png"}, None],
    }), path)
    manifest = inspect_input(str(path))
    files = pa.table({"file": [str(path)], "first_row": [0]})
    rows = [row for table in read_input_rows(files, options=OPTIONS, spec=manifest.spec)
            for row in table.to_pylist()]
    assert "neither bytes nor path" in rows[0]["input_error"]
    assert rows[1]["input_error"] is None and rows[1]["region_mask_bytes"] == b"\x89PNG"
    assert rows[2]["input_error"] is None and rows[2]["region_mask_bytes"] is None and rows[2]["region_mask_uri"] is None
