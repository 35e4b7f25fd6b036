"""outputs: shard encodings read back with the libraries users use, member URIs, the output reader."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.images import encode_png, image_extension
from diffedit_batch.data.outputs import (
    OutputReader,
    Sample,
    member_uri,
    parquet_shard,
    sample_key,
    shard_name,
    split_member,
    webdataset_shard,
)
from diffedit_batch.data.storage import StorageError, write_bytes_atomic


def png(seed: int, size=(12, 8), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return encode_png(Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode))


def samples() -> list[Sample]:
    out = []
    for k, edit_id in enumerate(["cat.v2#0", "dog/1", "ünï"]):
        source = io.BytesIO()
        Image.new("RGB", (12, 8), (k * 40, 10, 10)).save(source, format="JPEG")
        out.append(Sample(key=sample_key(edit_id), edit=png(k), edit_ext="png", mask=png(10 + k, mode="L"),
                          meta={"id": edit_id, "target_prompt": f"prompt {k}", "seed": k, "mask_coverage": 0.5},
                          source=source.getvalue() if k != 2 else None, source_ext="jpg" if k != 2 else None))
    return out


def test_sample_keys_have_no_dots_and_stay_distinct():
    keys = {sample_key(i) for i in ["a.b", "a_b", "a.b.c", "../x", "x"]}
    assert len(keys) == 5 and not any("." in key or "/" in key or "#" in key for key in keys)
    assert shard_name("run", ["a", "b"]) == shard_name("run", ["a", "b"]) != shard_name("run", ["a", "c"])


def test_member_uris_split_only_after_a_shard_name():
    assert split_member("s3://b/out/shards/x.tar#k.mask.png") == ("s3://b/out/shards/x.tar", "k.mask.png")
    assert split_member("/data/a#b/out/shards/x.parquet#k.png") == ("/data/a#b/out/shards/x.parquet", "k.png")
    assert split_member("/data/a#b/out/images/k.png") is None and split_member("/x/y.tar") is None
    assert member_uri("/s/x.tar", "k.png") == "/s/x.tar#k.png"


def test_webdataset_shards_read_back_with_the_webdataset_package(tmp_path):
    wds = pytest.importorskip("webdataset")
    shard = tmp_path / "shard.tar"
    shard.write_bytes(webdataset_shard(samples()))
    assert webdataset_shard(samples()) == shard.read_bytes()  # deterministic: a retried write is the same shard
    read = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in read] == [s.key for s in samples()]
    first = read[0]
    assert set(first) >= {"png", "mask.png", "json", "src.jpg"} and "src.jpg" not in read[2]
    assert first["png"] == samples()[0].edit and first["mask.png"] == samples()[0].mask
    assert json.loads(first["json"]) == samples()[0].meta
    decoded = next(iter(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False).decode("pil")))
    assert decoded["png"].size == (12, 8) and decoded["src.jpg"].size == (12, 8)


def test_parquet_shards_load_in_datasets_with_image_features(tmp_path):
    datasets = pytest.importorskip("datasets")
    shard = tmp_path / "shard.parquet"
    shard.write_bytes(parquet_shard(samples()))
    dataset = datasets.load_dataset("parquet", data_files=str(shard), split="train", cache_dir=str(tmp_path / "hf"))
    assert dataset["id"] == ["cat.v2#0", "dog/1", "ünï"] and dataset["seed"] == [0, 1, 2]
    row = dataset[1]
    assert isinstance(row["image"], Image.Image) and row["mask"].mode == "L"
    assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(io.BytesIO(samples()[1].edit))))
    assert dataset[2]["source_image"] is None
    assert pq.ParquetFile(shard).metadata.num_row_groups == 1


def test_the_output_reader_reads_files_and_members_of_either_shard(tmp_path, monkeypatch):
    from diffedit_batch.data import outputs

    tar, table = str(tmp_path / "s.tar"), str(tmp_path / "s.parquet")
    write_bytes_atomic(tar, webdataset_shard(samples()))
    write_bytes_atomic(table, parquet_shard(samples()))
    write_bytes_atomic(str(tmp_path / "plain.png"), b"plain")
    fetched = []
    real = outputs.read_bytes
    monkeypatch.setattr(outputs, "read_bytes", lambda uri, options=None: fetched.append(uri) or real(uri, options))
    reader = OutputReader()
    for shard in (tar, table):
        key = samples()[1].key
        assert reader.read(member_uri(shard, f"{key}.png")) == samples()[1].edit
        assert reader.read(member_uri(shard, f"{key}.mask.png")) == samples()[1].mask
        assert image_extension(reader.read(member_uri(shard, f"{key}.src.jpg"))) == "jpg"
        with pytest.raises(StorageError, match="no member 'nope.png'"):
            reader.read(member_uri(shard, "nope.png"))
    assert reader.read(str(tmp_path / "plain.png")) == b"plain"
    assert fetched == [tar, table, str(tmp_path / "plain.png")]  # each shard fetched once for all its members
