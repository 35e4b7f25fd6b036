"""The job's stages on their own, without Ray: reading the work list, fetching, declarations, the edit retry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.engine.settings import EditSettings
from diffedit_batch.pipeline.rows import WORK_SCHEMA, to_table
from diffedit_batch.pipeline.stages.edit import EditStage
from diffedit_batch.data.manifest import ManifestError, inspect_manifest, manifest_files
from diffedit_batch.data.inputs import read_input_rows
from diffedit_batch.pipeline.stages.read import read_work_rows, work_slices, work_tasks
from diffedit_batch.pipeline.stages.spec import Stage, check_chain

from .conftest import REPO

OPTIONS = StorageOptions()


def test_work_rows_are_read_in_slices_of_whole_batches(tmp_path):
    from diffedit_batch.data.records import parquet_bytes
    from diffedit_batch.data.worklist import REQUEST_SCHEMA

    rows = [{"edit_id": f"e{k}", "row_id": f"e{k}", "row_index": k, "status": "pending"} for k in range(2500)]
    work = tmp_path / "work.parquet"
    work.write_bytes(parquet_bytes(pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA), row_group_size=1024))
    # a small job: slices of one batch, so that each of two actors gets several
    small = work_slices([(str(work), 10), ("other", 3)], batch_size=2, actors=2)
    assert [(s["file"][-5:], s["start"], s["count"]) for s in small] == [
        ("rquet", 0, 2), ("rquet", 2, 2), ("rquet", 4, 2), ("rquet", 6, 2), ("rquet", 8, 2), ("other", 0, 2),
        ("other", 2, 1)]
    # larger ones: four slices of whole batches per actor, at most max_rows each unless that makes more than
    # max_slices
    assert [s["count"] for s in work_slices([(str(work), 2500)], batch_size=8)] == [632, 632, 632, 604]
    assert [s["count"] for s in work_slices([("w", 20000)], batch_size=32)] == [1024] * 19 + [544]
    assert [s["count"] for s in work_slices([("w", 2500)], batch_size=8, max_slices=2)] == [1256, 1244]
    [out] = read_work_rows(pa.Table.from_pylist([{"slices": [{"file": str(work), "start": 1020, "count": 10}]}]),
                           options=OPTIONS)
    assert out.schema == WORK_SCHEMA and out.column("row_index").to_pylist() == list(range(1020, 1030))


def test_the_slices_of_small_work_files_share_a_read_task(tmp_path):
    """A re-run's work list is a few rows in each of hundreds of buckets' files: read a task per file, each paid a
    task's cost for milliseconds of work. Grouped, a task reads consecutive slices up to a slice's rows."""
    files = [(f"w{k}", 3) for k in range(50)] + [("big", 300)]
    tasks = work_tasks(files, batch_size=32, actors=1)
    # 450 rows, four tasks an actor: 128 rows a task at most (whole batches)
    assert [sum(piece["count"] for piece in task) for task in tasks] == [126, 24, 128, 128, 44]
    assert [piece for task in tasks for piece in task] == work_slices(files, batch_size=32, actors=1)
    assert work_tasks([], batch_size=32) == []
    # a task's slices are read into its block, in order
    from diffedit_batch.data.records import parquet_bytes
    from diffedit_batch.data.worklist import REQUEST_SCHEMA

    for name, first in (("a", 0), ("b", 100)):
        rows = [{"edit_id": f"e{k}", "row_id": f"e{k}", "row_index": k, "status": "pending"}
                for k in range(first, first + 5)]
        (tmp_path / name).write_bytes(parquet_bytes(pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)))
    [task] = work_tasks([(str(tmp_path / "a"), 5), (str(tmp_path / "b"), 5)], batch_size=16)
    blocks = list(read_work_rows(pa.Table.from_pylist([{"slices": task}]), options=OPTIONS))
    assert [row for block in blocks for row in block.column("row_index").to_pylist()] == [0, 1, 2, 3, 4, *range(100, 105)]


def test_work_rows_have_one_schema_and_an_unknown_key_is_an_error():
    with pytest.raises(KeyError, match="pixel_count"):
        to_table([{"edit_id": "a", "pixel_count": 3}])
    with pytest.raises(ValueError, match="not in its schema: nope"):
        Stage(name="bad", run=len, reads=("nope",), adds=(), cpus=1)
    stages = [Stage(name="one", run=len, reads=(), adds=("pixels",), cpus=1),
              Stage(name="two", run=len, reads=("pixels", "edited"), adds=(), cpus=1)]
    with pytest.raises(ValueError, match="stage 'two' reads edited"):
        check_chain(stages, initial=())


def test_fetch_reads_and_decodes_a_picture_once_for_its_targets(tmp_path, monkeypatch):
    from diffedit_batch.pipeline.stages import fetch

    picture = tmp_path / "p.png"
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(picture)
    reads = []
    real = fetch.read_bytes
    monkeypatch.setattr(fetch, "read_bytes", lambda uri, options: reads.append(uri) or real(uri, options))
    rows = [{"edit_id": f"p#{k}", "status": Status.PENDING, "source_image_uri": str(picture)} for k in range(3)]
    rows.append({"edit_id": "missing", "status": Status.PENDING, "source_image_uri": str(tmp_path / "nope.png")})
    out = fetch.fetch_images(to_table(rows), options=OPTIONS, resolution=16, max_pixels=10**6).to_pylist()
    assert reads == [str(picture), str(tmp_path / "nope.png")]
    assert [(r["width"], r["height"], r["model_width"], r["model_height"]) for r in out[:3]] == [(30, 20, 16, 8)] * 3
    assert out[0]["fetch_s"] > 0 and out[0]["fetch_s"] == out[1]["fetch_s"] == out[2]["fetch_s"]  # shares of one
    assert (out[3]["status"], out[3]["error_class"], out[3]["pixels"]) == ("error", "storage", None)


def test_placement_is_computed_from_the_stage_declarations():
    from diffedit_batch.config import load_config
    from diffedit_batch.pipeline.placement import placement_problems
    from diffedit_batch.pipeline.plan import edit_pass_stages

    config = load_config(REPO / "configs" / "tiny.yaml", ["metrics.clip_model=some/clip",
                                                          "metrics.clip_gpus_per_actor=0.5"])
    stages = edit_pass_stages(config, "/out", "run", caption_images=True)
    assert [s.name for s in stages] == ["read work list", "fetch", "captions", "edit", "clip scores", "write", "commit"]
    problems = placement_problems(stages, {"CPU": 2.0})
    assert len(problems) == 2
    assert "need 0.5 GPUs (clip scores 0.5 x 1) but the Ray cluster has no GPUs" in problems[0]
    # edit 1 + captions 0.5 + clip 0.5 held, and the largest task (fetch, 0.25) on top
    assert "hold 2 CPUs (captions 0.5 x 1, edit 1 x 1, clip scores 0.5 x 1) and the largest task" in problems[1]
    assert placement_problems(stages, {"CPU": 2.25, "GPU": 1.0}) == []
    without = edit_pass_stages(config, "/out", "run", caption_images=False)
    assert "captions" not in [s.name for s in without]


@dataclass
class FakeResult:
    image: Image.Image
    mask: np.ndarray
    truncated_prompts: tuple = ()


class FlakyEngine:
    """A stand-in engine that fails any call holding the target prompt "boom", and records its calls."""

    vae_scale_factor = 8

    def __init__(self):
        from diffedit_batch.engine import EngineStats

        self.calls: list[list[str]] = []
        self.stats = EngineStats()

    def edit(self, images, sources, targets, seeds, settings=None, inversion_prompts=None):
        self.calls.append(list(targets))
        self.stats.unet_calls += 1
        self.stats.unet_samples += 2 * len(targets)
        self.stats.unet_shapes.add((2 * len(targets), 4, images[0].height // 8, images[0].width // 8))
        if "boom" in targets:
            raise RuntimeError("the model broke on this row")
        return [FakeResult(image, np.ones((image.height // 8, image.width // 8), np.uint8)) for image in images]


def test_edit_stage_retries_a_failed_batch_row_by_row():
    engine = FlakyEngine()
    stage = EditStage(None, EditSettings(), engine=engine, batch_size=8)
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


def test_an_edit_block_is_grouped_by_shape_into_calls_that_keep_a_pictures_targets():
    from diffedit_batch.pipeline.stages.edit import engine_calls

    def row(row_index, target, width=64):
        return {"edit_id": f"{row_index}#{target}", "row_index": row_index, "model_width": width, "model_height": 64}

    rows = ([row(0, k) for k in range(3)] + [row(1, 0, width=96)] + [row(2, k) for k in range(3)]
            + [row(3, k, width=96) for k in range(2)] + [row(4, k) for k in range(5)])
    calls = [[r["edit_id"] for r in call] for call in engine_calls(rows, batch_size=4)]
    assert calls == [["0#0", "0#1", "0#2"], ["2#0", "2#1", "2#2"], ["4#0", "4#1", "4#2", "4#3", "4#4"],
                     ["1#0", "3#0", "3#1"]]


def test_the_edit_stage_reports_each_engine_calls_work_for_the_run_file():
    import json

    engine = FlakyEngine()
    stage = EditStage(None, EditSettings(), engine=engine, batch_size=2)
    picture = np.full((16, 24, 3), 100, np.uint8).tobytes()
    rows = [{"edit_id": name, "row_index": k, "status": Status.PENDING, "model_width": 24, "model_height": 16,
             "pixels": picture, "source_prompt": "a photo", "target_prompt": name, "seed": 1, "inversion_prompt": None}
            for k, name in enumerate(("a", "b", "c"))]
    out = stage(to_table(rows)).to_pylist()
    counts = [json.loads(row["engine_counts"]) if row["engine_counts"] else None for row in out]
    assert counts[1] is None  # the second row of the first call
    assert counts[0]["unet_calls"] == counts[2]["unet_calls"] == 1
    assert (counts[0]["unet_samples"], counts[2]["unet_samples"]) == (4, 2)
    assert counts[0]["unet_shapes"] == [[4, 4, 2, 3]] and counts[2]["unet_shapes"] == [[2, 4, 2, 3]]


def test_an_edit_that_overflows_to_nan_is_an_engine_error_not_a_black_ok_edit(engine):
    import torch

    # A finite but absurd guidance scale overflows float32 as float16 overflows at ordinary ones (SDXL's VAE):
    # every latent ends NaN/Inf, and the picture made of it would be black.
    stage = EditStage(None, EditSettings(num_inference_steps=4, guidance_scale=1e30), engine=engine, batch_size=2)
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()
    rows = [{"edit_id": name, "row_index": k, "status": Status.PENDING, "model_width": 64, "model_height": 64,
             "pixels": picture, "source_prompt": "a cat", "target_prompt": name, "seed": 1, "inversion_prompt": None}
            for k, name in enumerate(("a dog", "a cow"))]
    out = stage(to_table(rows)).to_pylist()
    assert [row["status"] for row in out] == [Status.ERROR, Status.ERROR]
    assert {row["error_class"] for row in out} == {ErrorClass.ENGINE}
    assert all("NaN/Inf" in row["error"] and "model.dtype=float32" in row["error"] for row in out)
    assert all(row["edited"] is None for row in out)

    # Per latent: a finite one still decodes to its picture beside one that is not.
    latents = torch.zeros((2, 4, 8, 8))
    latents[1, 0, 0, 0] = float("nan")
    decoded = engine.codec.decode(latents)
    assert decoded[0] is not None and decoded[1] is None


def test_a_shards_source_picture_is_stored_upright_when_exif_rotates_it(tmp_path):
    import io

    from PIL import ImageOps

    from diffedit_batch.config import OutputConfig
    from diffedit_batch.pipeline.stages.write import write_outputs

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: the stored 32x16 shows as 16x32
    Image.new("RGB", (32, 16), (200, 30, 30)).save(tmp_path / "rotated.jpg", exif=exif)
    Image.new("RGB", (16, 32), (200, 30, 30)).save(tmp_path / "plain.jpg")
    rows = [{"edit_id": name, "status": Status.PENDING, "width": 16, "height": 32, "model_width": 16,
             "model_height": 32, "pixels": None, "edited": np.zeros((32, 16, 3), np.uint8).tobytes(),
             "mask": np.ones((4, 2), np.uint8).tobytes(), "mask_width": 2, "mask_height": 4,
             "source_image_uri": str(tmp_path / f"{name}.jpg")} for name in ("rotated", "plain")]
    out = {row["edit_id"]: row for row in write_outputs(
        to_table(rows), output_prefix=str(tmp_path / "out"), options=OPTIONS,
        output=OutputConfig(format="webdataset"), background_metrics=False).to_pylist()}
    rotated = Image.open(io.BytesIO(out["rotated"]["encoded_source"]))
    assert out["rotated"]["encoded_source_ext"] == "png" and rotated.size == (16, 32)
    assert ImageOps.exif_transpose(rotated).size == (16, 32)  # and no EXIF left to rotate it again
    assert out["plain"]["encoded_source"] == (tmp_path / "plain.jpg").read_bytes()
    assert out["plain"]["encoded_source_ext"] == "jpg"


# --- reading the manifest (issue 27) ------------------------------------------------------------


def _write_manifest(path, ids):
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "image": [f"{i}.png" for i in ids], "target_prompt": ["a cat"] * len(ids)}),
                   path)


def test_a_relative_image_resolves_against_the_folder_of_its_own_file(tmp_path):
    folder = tmp_path / "manifest"
    _write_manifest(folder / "top.parquet", ["a"])
    _write_manifest(folder / "cats" / "more.parquet", ["b"])
    files = manifest_files(str(folder))
    batch = pa.table({"file": files, "first_row": [0, 1]})
    rows = [row for table in read_input_rows(batch, options=OPTIONS) for row in table.to_pylist()]
    assert {row["id"]: row["image"] for row in rows} == {
        "a": str(folder / "a.png"), "b": str(folder / "cats" / "b.png")}
    # Given directly, the same file reads the same.
    [alone] = read_input_rows(pa.table({"file": [str(folder / "cats" / "more.parquet")], "first_row": [0]}),
                              options=OPTIONS)
    assert alone.column("image").to_pylist() == [str(folder / "cats" / "b.png")]


def test_a_manifest_file_with_a_corrupt_data_page_is_a_manifest_error_naming_it(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    table = pa.table({"id": [f"r{k}" for k in range(500)], "image": ["a.png"] * 500,
                      "target_prompt": [f"a cat {k}" for k in range(500)]})
    pq.write_table(table, path, compression="none", use_dictionary=False)
    data = bytearray(path.read_bytes())
    page = pq.ParquetFile(path).metadata.row_group(0).column(2).data_page_offset
    data[page:page + 32] = b"\xff" * 32  # the footer stays intact: only reading the rows finds it
    path.write_bytes(bytes(data))
    assert inspect_manifest(str(path)).rows == 500
    with pytest.raises(ManifestError, match=r"manifest file .*bad\.parquet cannot be read .*write it again"):
        list(read_input_rows(pa.table({"file": [str(path)], "first_row": [0]}), options=OPTIONS))


def test_a_ray_wrapped_error_is_found_under_its_wrappers_and_printed_on_one_line():
    from diffedit_batch.data.storage import StorageError
    from diffedit_batch.pipeline.task_errors import one_line, original_error

    inner = ManifestError("manifest file m/bad.parquet cannot be read")

    class UserCodeException(Exception):
        pass

    class RayTaskError(UserCodeException):  # as Ray builds it: the remote traceback as its text
        def __init__(self, cause):
            super().__init__("\x1b[36mray::MapBatches(read)()\x1b[39m\n  File x, line 1\n" + str(cause))
            self.cause = cause

    try:
        try:
            raise inner
        except ManifestError as error:
            raise UserCodeException("UDF failed") from error
    except UserCodeException as wrapped:
        outer = RayTaskError(wrapped)
    assert original_error(outer, (ManifestError, StorageError)) is inner
    assert original_error(RuntimeError("x"), (ManifestError,)) is None
    assert one_line(str(outer)) == "ray::MapBatches(read)() File x, line 1 UDF failed"


def test_a_long_prompt_is_cut_and_flagged_without_transformers_indexing_warning(engine, transformers_warnings):
    stage = EditStage(None, EditSettings(num_inference_steps=2), engine=engine, batch_size=2)
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()
    rows = [{"edit_id": "long", "row_index": 0, "status": Status.PENDING, "model_width": 64, "model_height": 64,
             "pixels": picture, "source_prompt": "a photo of " + "a very " * 80 + "big cat", "target_prompt": "a dog",
             "seed": 1, "inversion_prompt": None}]
    [out] = stage(to_table(rows)).to_pylist()
    assert out["status"] == Status.PENDING and out["prompt_truncated"] is True
    assert not [message for message in transformers_warnings if "indexing errors" in message]


def test_a_caption_that_says_what_the_target_says_leaves_nothing_to_edit():
    engine = FlakyEngine()
    stage = EditStage(None, EditSettings(), engine=engine, batch_size=8)
    picture = np.full((16, 24, 3), 100, np.uint8).tobytes()
    rows = [{"edit_id": name, "status": Status.PENDING, "model_width": 24, "model_height": 16, "pixels": picture,
             "source_prompt": source, "target_prompt": "a photo of a cat", "seed": 1, "inversion_prompt": None}
            for name, source in (("captioned-same", "A photo of a  cat"), ("fine", "a photo of a dog"))]
    out = {row["edit_id"]: row for row in stage(to_table(rows)).to_pylist()}
    assert engine.calls == [["a photo of a cat"]]  # only the edit with something to edit reaches the engine
    assert out["captioned-same"]["error_class"] == ErrorClass.INVALID_ROW
    assert "nothing to edit" in out["captioned-same"]["error"]
    assert out["fine"]["status"] == Status.PENDING


def test_a_manifest_given_by_a_relative_path_resolves_each_image_once(tmp_path, monkeypatch):
    """`--input examples/manifest.parquet` from the repository root: images/a.png is examples/images/a.png (read
    stage, then the plan's requests), not examples/examples/images/a.png."""
    from diffedit_batch.config import Config
    from diffedit_batch.data.manifest import inspect_manifest
    from diffedit_batch.pipeline.planning import plan_stages

    monkeypatch.chdir(tmp_path)
    _write_manifest(tmp_path / "examples" / "manifest.parquet", ["a"])
    manifest = inspect_manifest("examples/manifest.parquet", OPTIONS)
    stages = plan_stages(Config(), manifest, buckets=1, output_prefix=str(tmp_path / "out"), run_id="r")
    read, requests = stages["read"], stages["requests"]
    [table] = read.run(pa.table({"file": ["examples/manifest.parquet"], "first_row": [0]}), **read.kwargs)
    [plan_row] = requests.run(table, **requests.kwargs).to_pylist()
    assert plan_row["source_image_uri"] == "examples/a.png"
