"""Labels travel into the outputs and the exports: carried columns with their features, source rows, an image folder
(issue 35)."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.data.inputs import InputSpec
from diffedit_batch.data.outputs import Sample, parquet_shard, webdataset_shard
from diffedit_batch.data.records import RECORD_SCHEMA, write_record_part
from diffedit_batch.data.run_metadata import write_run_metadata
from diffedit_batch.testing.labelled import picture

CARRIED = pa.schema([("label", pa.int64()), ("objects", pa.struct([("bbox", pa.list_(pa.list_(pa.float64())))]))])
FEATURES = {"label": {"names": ["cat", "dog"], "_type": "ClassLabel"},
            "objects": {"bbox": {"feature": {"feature": {"dtype": "float64", "_type": "Value"}, "_type": "List"},
                                 "_type": "List"}}}


def _sample(label: int) -> Sample:
    return Sample(key=f"k{label}", edit=picture("red"), edit_ext="png", mask=picture("white"),
                  meta={"id": f"e{label}", "source_id": f"s{label}", "synthetic": True},
                  carried={"label": label, "objects": {"bbox": [[1.0, 2.0, 3.0, 4.0]]}})


def test_shards_carry_the_labels():
    with tarfile.open(fileobj=io.BytesIO(webdataset_shard([_sample(1)]))) as tar:
        members = {info.name: tar.extractfile(info).read() for info in tar}
    assert members["k1.cls"] == b"1"
    meta = json.loads(members["k1.json"])
    assert (meta["label"], meta["objects"], meta["source_id"], meta["synthetic"]) == (
        1, {"bbox": [[1.0, 2.0, 3.0, 4.0]]}, "s1", True)

    table = pq.read_table(pa.BufferReader(parquet_shard([_sample(0), _sample(1)], CARRIED, FEATURES)))
    assert table.column("label").to_pylist() == [0, 1] and table.schema.field("label").type == pa.int64()
    assert table.column("objects").to_pylist()[0] == {"bbox": [[1.0, 2.0, 3.0, 4.0]]}
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == FEATURES["label"] and features["source_id"]["dtype"] == "string"


@pytest.fixture
def labelled_job(tmp_path):
    """A job's output by hand: two edits of source s0 (a cat), one of s1 (a dog), pictures embedded in a Parquet."""
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"image": pa.array([picture("blue"), picture("green")], pa.binary())}), source)
    for name in ("e0", "e1", "e2"):
        Image.new("RGB", (48, 32), "red").save(tmp_path / f"{name}.png")
    Image.new("L", (48, 32)).save(tmp_path / "mask.png")
    prefix = str(tmp_path / "job")
    spec = InputSpec(format="parquet", root=str(source), image="binary", carry=("label", "objects"),
                     class_names={"label": ["cat", "dog"]}, carried_schema=CARRIED, features=FEATURES)
    write_run_metadata(prefix, {"run_id": "r1", "input": spec.describe()})
    records = []
    for name, row, label in (("e0", 0, 0), ("e1", 0, 0), ("e2", 1, 1)):
        records.append({"id": name, "row_id": f"s{row}", "source_id": f"s{row}", "synthetic": True, "status": "ok",
                        "run_id": "r1", "image_uri": str(tmp_path / f"{name}.png"),
                        "mask_uri": str(tmp_path / "mask.png"), "source_image_uri": f"{source}#row={row}",
                        "source_prompt": "a photo", "target_prompt": "a photo in the snow",
                        "carried": json.dumps({"label": label, "objects": {"bbox": [[0.0, 0.0, 2.0, 2.0]]}})})
    write_record_part(prefix, records, part_name="r1-0", schema=RECORD_SCHEMA)
    return prefix, tmp_path


def test_the_export_keeps_carried_features_and_adds_each_source_once(labelled_job):
    prefix, tmp_path = labelled_job
    result = export_dataset(prefix, str(tmp_path / "export"), with_sources=True)
    assert (result.rows, result.sources) == (5, 2)
    table = pq.read_table(result.parts[0])
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == {"names": ["cat", "dog"], "_type": "ClassLabel"}
    rows = table.to_pylist()
    edits = [row for row in rows if row["synthetic"]]
    sources = [row for row in rows if not row["synthetic"]]
    assert [row["label"] for row in edits] == [0, 0, 1]
    assert [(row["id"], row["source_id"], row["label"], row["mask"]) for row in sources] == [
        ("s0", "s0", 0, None), ("s1", "s1", 1, None)]
    assert sources[1]["image"]["bytes"] == picture("green")  # read from the input's row, where it is embedded
    assert edits[0]["objects"] == {"bbox": [[0.0, 0.0, 2.0, 2.0]]}

    import datasets

    loaded = datasets.load_dataset("parquet", data_files=result.parts, split="train")
    assert loaded.features["label"] == datasets.ClassLabel(names=["cat", "dog"])
    assert loaded.features["label"].int2str(loaded[4]["label"]) == "dog"


def test_the_image_folder_export(labelled_job):
    prefix, tmp_path = labelled_job
    out = tmp_path / "folder"
    result = export_dataset(prefix, str(out), export_format="imagefolder", with_sources=True)
    assert (result.rows, result.sources) == (5, 2)
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(line["file_name"].split("/")[0] for line in lines) == ["cat", "cat", "cat", "dog", "dog"]
    assert all((out / line["file_name"]).is_file() for line in lines)
    source = next(line for line in lines if not line["synthetic"] and line["source_id"] == "s1")
    assert (source["label"], source["target_prompt"]) == (1, None)

    import datasets

    # the metadata's columns, the carried label as its index (HF's loader takes no class names from metadata.jsonl)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert {"source_id", "synthetic", "label", "target_prompt", "objects"} <= set(loaded.features)
    assert sorted(loaded["label"]) == [0, 0, 0, 1, 1]
    # the folders alone, as torchvision's ImageFolder reads them: classes are the sorted folder names
    by_folder = datasets.load_dataset("imagefolder", data_files={"train": f"{out}/*/*.png"}, split="train")
    assert by_folder.features["label"].names == ["cat", "dog"] and sorted(by_folder["label"]) == [0, 0, 0, 1, 1]


def test_with_sources_is_refused_for_pix2pix(labelled_job):
    prefix, tmp_path = labelled_job
    with pytest.raises(ValueError, match="instruct-pix2pix"):
        export_dataset(prefix, str(tmp_path / "p"), export_format="instruct-pix2pix", with_sources=True)


def test_report_thumbnails_read_an_embedded_source(labelled_job):
    from diffedit_batch.data.outputs import OutputReader
    from diffedit_batch.report.thumbs import make_thumbnails

    _, tmp_path = labelled_job
    record = {"source_image_uri": f"{tmp_path / 'in.parquet'}#row=1", "image_uri": str(tmp_path / "e2.png"),
              "mask_uri": str(tmp_path / "mask.png")}
    thumbs = make_thumbnails(record, 16, OutputReader())
    assert set(thumbs) == {"in", "mask", "edit"}
    with Image.open(io.BytesIO(thumbs["in"])) as image:
        assert image.convert("RGB").getpixel((2, 2))[1] > 100  # the green source, read from its row
