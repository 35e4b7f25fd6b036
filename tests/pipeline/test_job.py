"""The batch job end to end on a local in-process Ray: outputs, records, resume, failures, determinism."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

from diffedit_batch.data.manifest import ManifestError
from diffedit_batch.pipeline import run_job

from .conftest import read_records, write_manifest

pytestmark = pytest.mark.slow

EXAMPLE_EDITS = ["astronaut-robot", "coffee-tea", "chelsea#0", "chelsea#1", "chelsea#2", "rocket-balloon",
                 "chelsea-concepts", "coffee-caption"]


def test_example_manifest_end_to_end(ray_local, job_config, example_copy, tmp_path):
    output = tmp_path / "out"
    summary = run_job(job_config(), str(example_copy / "manifest.parquet"), str(output))
    assert (summary.ok, summary.failed, summary.skipped) == (8, 0, 0)
    records = read_records(output)
    assert sorted(r["id"] for r in records) == sorted(EXAMPLE_EDITS)
    for record in records:
        assert record["status"] == "ok" and record["error"] is None
        source = Image.open(record["source_image_uri"])
        edited, mask = Image.open(record["image_uri"]), Image.open(record["mask_uri"])
        assert edited.size == source.size == mask.size == (record["width"], record["height"])
        assert edited.mode == "RGB" and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert abs(np.asarray(mask).mean() / 255 - record["mask_coverage"]) < 0.05
        assert record["model_id"] and record["run_id"] == summary.run_id
        assert record["edit_s"] > 0 and record["fetch_s"] >= 0 and record["write_s"] >= 0
        assert str(Path(record["image_uri"]).resolve()).startswith(str(output.resolve()))
    by_id = {r["id"]: r for r in records}
    assert by_id["astronaut-robot"]["fetch_s"] > 0
    assert by_id["astronaut-robot"]["seed"] == 1
    assert by_id["coffee-tea"]["inversion_prompt"] == "a cup of coffee on a saucer on a table"
    # the targets of one row share its seed (derived from the row id when the manifest gives none)
    assert len({by_id[f"chelsea#{k}"]["seed"] for k in range(3)}) == 1
    # a row without a source prompt: BLIP's caption guides the inversion and stands in for the source
    captioned = by_id["coffee-caption"]
    assert captioned["caption"] and captioned["caption"].startswith("a photograph of")
    assert captioned["inversion_prompt"] == captioned["source_prompt"] == captioned["caption"]
    assert by_id["coffee-tea"]["caption"] is None  # rows with a source are not captioned
    # concepts: Flan-T5 captions per distinct concept, kept in a side table for audit
    concepts = by_id["chelsea-concepts"]
    assert (concepts["source_concept"], concepts["target_concept"]) == ("cat", "dog")
    assert concepts["source_prompt"] is None and concepts["target_prompt"] is None
    side = ds.dataset(str(output / "concepts"), format="parquet").to_table().to_pylist()
    assert {row["concept"] for row in side} == {"cat", "dog"}
    assert all(len(row["captions"]) == 4 and row["run_id"] == summary.run_id for row in side)
    # the run file sums the edit actors' engine counters and the CPU side's seconds
    run_file = json.loads((output / "runs" / f"{summary.run_id}.json").read_text())
    engine = run_file["engine"]
    assert engine["edits"] == 8 and engine["vae_encodes"] >= 1 and engine["vae_decodes"] >= 1
    assert engine["text_encodes"] >= 1 and 0 < engine["unet_calls"] <= engine["unet_samples"]
    assert 1 <= len(engine["unet_shapes"]) <= engine["unet_calls"]  # the distinct [B, C, h, w] themselves
    assert run_file["fetch_cpu_s"] > 0 and run_file["write_cpu_s"] > 0

    again = run_job(job_config(), str(example_copy / "manifest.parquet"), str(output))
    assert (again.ok, again.failed, again.skipped) == (0, 0, 8)
    assert len(read_records(output)) == 8
    # nothing left to edit: no concept was captioned again (their captions are seeded: tests/recipe)
    side = ds.dataset(str(output / "concepts"), format="parquet").to_table().to_pylist()
    assert {row["run_id"] for row in side} == {summary.run_id}


def test_bad_rows_become_error_records_and_good_rows_finish(ray_local, job_config, example_copy, tmp_path):
    images = example_copy / "images"
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("this is not a picture")
    good = (images / "coffee.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])
    rows = [
        {"id": "good", "image": "images/coffee.jpg", "source_prompt": "coffee", "target_prompt": "tea"},
        {"id": "missing", "image": "images/nope.jpg", "source_prompt": "a", "target_prompt": "b"},
        {"id": "empty-file", "image": "images/empty.png", "source_prompt": "a", "target_prompt": "b"},
        {"id": "text-file", "image": "images/text.png", "source_prompt": "a", "target_prompt": "b"},
        {"id": "truncated", "image": "images/truncated.jpg", "source_prompt": "a", "target_prompt": "b"},
        {"id": "no-target", "image": "images/coffee.jpg", "source_prompt": "a", "target_prompt": "  "},
        {"id": "no-source", "image": "images/coffee.jpg", "source_prompt": None, "target_prompt": "b"},
        {"id": "good", "image": "images/chelsea.jpg", "source_prompt": "cat", "target_prompt": "dog"},
        {"id": "../../escape", "image": "images/chelsea.jpg", "source_prompt": "cat", "target_prompt": "dog"},
    ]
    manifest = write_manifest(example_copy / "hostile.parquet", rows)
    output = tmp_path / "out" / "prefix"
    output.parent.mkdir()
    before = set(os.listdir(tmp_path))
    summary = run_job(job_config(), str(manifest), str(output))
    assert (summary.ok, summary.failed, summary.duplicates) == (3, 5, 1)
    records = read_records(output)
    classes = {(r["id"], r["status"]): r["error_class"] for r in records}
    assert classes == {
        ("good", "ok"): None,
        ("good", "duplicate"): "duplicate_id",
        ("../../escape", "ok"): None,
        ("missing", "error"): "storage",
        ("empty-file", "error"): "image_decode",
        ("text-file", "error"): "image_decode",
        ("truncated", "error"): "image_decode",
        ("no-target", "error"): "invalid_row",
        ("no-source", "ok"): None,  # BLIP's caption stands in for the missing source
    }
    for record in records:
        if record["status"] != "ok":
            assert record["error"] and record["image_uri"] is None
    escaped = next(r for r in records if r["id"] == "../../escape")
    assert Path(escaped["image_uri"]).resolve().is_relative_to(output.resolve())
    assert set(os.listdir(tmp_path)) == before and os.listdir(output.parent) == ["prefix"]  # nothing outside
    assert set(os.listdir(output)) <= {"images", "masks", "manifest", "runs"}

    # Fix one failure and re-run: it is retried, ok ones are skipped, every id keeps exactly one record
    (images / "nope.jpg").write_bytes(good)
    again = run_job(job_config(), str(manifest), str(output))
    assert (again.ok, again.skipped) == (1, 3)
    statuses = Counter((r["id"], r["status"]) for r in read_records(output))
    assert statuses[("missing", "ok")] == 1 and ("missing", "error") not in statuses
    assert all(count == 1 for count in statuses.values())
    assert Counter(r["id"] for r in read_records(output) if r["status"] != "duplicate").most_common(1)[0][1] == 1


def test_results_do_not_depend_on_batch_composition(ray_local, job_config, example_copy, tmp_path):
    manifest = str(example_copy / "manifest.parquet")
    run_job(job_config("job.batch_size=1"), manifest, str(tmp_path / "one"))
    run_job(job_config("job.batch_size=6"), manifest, str(tmp_path / "six"))
    one = {r["id"]: r for r in read_records(tmp_path / "one")}
    six = {r["id"]: r for r in read_records(tmp_path / "six")}
    assert one.keys() == six.keys()
    for edit_id in one:
        a = np.asarray(Image.open(one[edit_id]["image_uri"]), np.int16)
        b = np.asarray(Image.open(six[edit_id]["image_uri"]), np.int16)
        assert np.abs(a - b).mean() < 0.5, edit_id
        assert one[edit_id]["seed"] == six[edit_id]["seed"]


def test_schema_errors_stop_the_job_before_any_work(ray_local, job_config, tmp_path):
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("image", pa.string()), ("target_prompt", pa.string()),
                        ("seed", pa.string())])
    manifest = write_manifest(tmp_path / "bad.parquet", [{"id": "a", "image": "x.png", "target_prompt": "b"}], schema)
    with pytest.raises(ManifestError, match="seed"):
        run_job(job_config(), str(manifest), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_noop_mode_keeps_the_data_path_and_skips_diffusion(ray_local, job_config, example_copy, tmp_path):
    # at the photos' own size (384 px) the model-resolution round trip is exact
    config = job_config("job.mode=noop", "model.resolution=384")
    summary = run_job(config, str(example_copy / "manifest.parquet"), str(tmp_path / "out"))
    assert summary.ok == 8
    record = next(r for r in read_records(tmp_path / "out") if r["id"] == "coffee-tea")
    source = np.asarray(Image.open(record["source_image_uri"]).convert("RGB"), np.int16)
    edited = np.asarray(Image.open(record["image_uri"]), np.int16)
    assert np.array_equal(source, edited)
    assert record["mask_coverage"] == 0


def test_s3_manifest_images_and_output(ray_local, s3_server, job_config, example_copy):
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    name = bucket.removeprefix("s3://")
    for path in (example_copy / "images").iterdir():
        client.put_object(Bucket=name, Key=f"inputs/images/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=name, Key="inputs/manifest.parquet", Body=(example_copy / "manifest.parquet").read_bytes())
    config = job_config(f"storage.s3_endpoint_url={s3_server.endpoint_url}", "storage.s3_region=us-east-1")
    summary = run_job(config, f"{bucket}/inputs/manifest.parquet", f"{bucket}/outputs/run1")
    assert summary.ok == 8 and summary.failed == 0
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="outputs/run1/")["Contents"]]
    assert sum(k.startswith("outputs/run1/images/") for k in keys) == 8
    assert sum(k.startswith("outputs/run1/masks/") for k in keys) == 8
    parts = [k for k in keys if k.startswith("outputs/run1/manifest/part-")]
    import pyarrow.parquet as pq

    records = [r for k in parts for r in pq.read_table(io.BytesIO(client.get_object(Bucket=name, Key=k)["Body"].read())).to_pylist()]
    assert len(records) == 8 and all(r["image_uri"].startswith(f"{bucket}/outputs/run1/images/") for r in records)
    png = client.get_object(Bucket=name, Key=records[0]["image_uri"].removeprefix(f"{bucket}/"))["Body"].read()
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert run_job(config, f"{bucket}/inputs/manifest.parquet", f"{bucket}/outputs/run1").skipped == 8


def test_a_config_that_cannot_be_placed_fails_fast(ray_local, job_config, example_copy, tmp_path):
    from diffedit_batch.pipeline import JobSetupError

    with pytest.raises(JobSetupError, match=r"actor pools hold 5 CPUs \(edit 5 x 1\)"):
        run_job(job_config("job.cpus_per_actor=5"), str(example_copy / "manifest.parquet"), str(tmp_path / "out"))
    with pytest.raises(JobSetupError, match="no GPUs"):
        run_job(job_config("job.gpus_per_actor=1"), str(example_copy / "manifest.parquet"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before anything was written
