"""Augment in the edit pass's stages, without Ray: regions fetched and applied, the background pasted bit for bit,
single edits held to floors, clip_label, and a template that names no column stopping the run before any work."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from diffedit_batch import EditSettings
from diffedit_batch.config import CandidatesConfig, OutputConfig
from diffedit_batch.data.regions import pack, unpack
from diffedit_batch.data.status import ErrorClass, Status
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.pipeline.rows import to_table
from diffedit_batch.pipeline.stages.edit import EditStage
from diffedit_batch.pipeline.stages.fetch import fetch_images
from diffedit_batch.pipeline.stages.write import write_outputs
from diffedit_batch.testing.pictures import synthetic_photo

from .test_stages import FakeResult

OPTIONS = StorageOptions()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_fetch_makes_the_editable_area_from_boxes_and_a_region_mask(tmp_path):
    synthetic_photo(40, 24, 1).save(tmp_path / "p.png")
    mask = Image.new("L", (20, 12), 0)
    mask.paste(255, (0, 0, 5, 6))  # the top-left quarter of a half-size mask: resized nearest to 10 x 12
    rows = [{"edit_id": "boxes", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_boxes": [[30.5, 0, 2, 2]]},
            {"edit_id": "mask", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_mask": _png(mask)},
            {"edit_id": "bad", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_mask": b"not a picture"},
            {"edit_id": "none", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png")}]
    out = {row["edit_id"]: row for row in fetch_images(to_table(rows), options=OPTIONS, resolution=64,
                                                       max_pixels=10**6, region_mode="outside").to_pylist()}
    boxes = unpack(out["boxes"]["region"], 40, 24)
    assert (~boxes).sum() == 6 and (~boxes[0:2, 30:33]).all()  # x 30.5..32.5 -> columns 30..32; outside: kept
    region = ~unpack(out["mask"]["region"], 40, 24)
    assert region.sum() == 10 * 12 and region[:12, :10].all()
    assert out["bad"]["status"] == Status.ERROR and out["bad"]["error_class"] == ErrorClass.IMAGE_DECODE
    assert out["none"]["region"] is None and out["none"]["status"] == Status.PENDING


def _edited_row(tmp_path, region=None):
    source = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(source).save(tmp_path / "source.png")
    return source, {"edit_id": "e", "status": Status.PENDING, "width": 48, "height": 32, "model_width": 48,
                    "model_height": 32, "pixels": source.tobytes(),
                    "edited": np.full((32, 48, 3), 7, np.uint8).tobytes(), "mask": np.ones((4, 6), np.uint8).tobytes(),
                    "mask_width": 6, "mask_height": 4, "source_image_uri": str(tmp_path / "source.png"),
                    "region": region}


def test_pixels_inside_a_kept_box_equal_the_inputs_and_the_written_mask_is_the_final_one(tmp_path):
    from diffedit_batch.data.regions import editable_area

    area = editable_area(48, 32, boxes=[[10, 5, 12.5, 9]], mode="outside")  # keep x 10..22, y 5..13
    source, row = _edited_row(tmp_path, pack(area))
    [out] = write_outputs(to_table([row]), output_prefix=str(tmp_path / "out"), options=OPTIONS,
                          output=OutputConfig(paste_background=True), background_metrics=False).to_pylist()
    written = np.asarray(Image.open(out["image_uri"]).convert("RGB"))
    mask = np.asarray(Image.open(out["mask_uri"])) > 0
    assert (written[5:14, 10:23] == source[5:14, 10:23]).all()  # the kept box: the input's own pixels
    assert (~mask[5:14, 10:23]).all() and (mask == area).all()
    assert (written[mask] == 7).all()  # the edit everywhere else
    assert out["mask_coverage"] == pytest.approx(area.mean())


def test_feather_softens_only_inside_the_edit(tmp_path):
    from diffedit_batch.data.regions import editable_area

    area = editable_area(48, 32, boxes=[[16, 8, 16, 16]], mode="inside")
    source, row = _edited_row(tmp_path, pack(area))
    [out] = write_outputs(to_table([row]), output_prefix=str(tmp_path / "out"), options=OPTIONS,
                          output=OutputConfig(paste_background=True, feather_px=4), background_metrics=False
                          ).to_pylist()
    written = np.asarray(Image.open(out["image_uri"]).convert("RGB"))
    assert (written[~area] == source[~area]).all()
    assert (written[12:20, 20:28] == 7).all()  # 4 px inside the edit: the edit itself
    assert not (written[8, 16:32] == 7).all()  # the edit's own edge is blended


class MaskEngine:
    """A stand-in engine whose masks cover the picture (then the region constraint), recording what it was given."""

    vae_scale_factor = 8

    def __init__(self):
        from diffedit_batch.engine import EngineStats

        self.regions, self.stats = [], EngineStats()

    def edit(self, images, sources, targets, seeds, settings=None, inversion_prompts=None, regions=None):
        regions = regions or [None] * len(images)
        self.regions.append(regions)
        return [FakeResult(image, np.ones((image.height // 8, image.width // 8), np.uint8) if region is None
                           else np.asarray(region, np.uint8)) for image, region in zip(images, regions)]


def _request(edit_id, region=None, **extra):
    picture = synthetic_photo(32, 32, 0)
    return {"edit_id": edit_id, "row_id": edit_id, "row_index": 0, "status": Status.PENDING, "model_width": 32,
            "model_height": 32, "width": 32, "height": 32, "pixels": picture.tobytes(), "source_prompt": "a cat",
            "target_prompt": "a dog", "seed": 1, "inversion_prompt": None, "source_image_uri": "p.png",
            "region": region, **extra}


def test_the_edit_stage_hands_the_region_to_the_engine_and_filters_a_mask_with_nothing_left():
    from diffedit_batch.data.regions import editable_area

    engine = MaskEngine()
    stage = EditStage(None, EditSettings(), engine=engine, batch_size=8)
    half = pack(editable_area(32, 32, boxes=[[0, 0, 12, 32]], mode="outside"))  # keep x 0..11: cells 0 and 1
    nothing = pack(editable_area(32, 32, boxes=[[0, 0, 32, 32]], mode="outside"))
    out = {row["edit_id"]: row for row in stage(to_table([_request("half", half), _request("none", nothing),
                                                          _request("plain")])).to_pylist()}
    constraint = engine.regions[0][0]
    assert constraint.tolist() == [[0, 0, 1, 1]] * 4 and engine.regions[0][2] is None
    assert out["half"]["status"] == Status.PENDING and out["half"]["mask_coverage"] == 0.5
    assert out["none"]["status"] == Status.FILTERED and out["none"]["edited"] is None
    assert out["none"]["filter_reason"].startswith("nothing left to edit")
    assert out["plain"]["status"] == Status.PENDING


def test_floors_hold_single_edits_too():
    from diffedit_batch.data.regions import editable_area

    config = CandidatesConfig(min={"mask_coverage": 0.6})
    stage = EditStage(None, EditSettings(), engine=MaskEngine(), batch_size=8, candidates=config)
    half = pack(editable_area(32, 32, boxes=[[0, 0, 12, 32]], mode="outside"))
    out = {row["edit_id"]: row for row in stage(to_table([_request("half", half), _request("whole")])).to_pylist()}
    assert out["half"]["status"] == Status.FILTERED and out["half"]["filter_reason"] == "mask_coverage 0.5 < min 0.6"
    assert out["half"]["edited"] is None and out["half"]["candidate"] is None and out["half"]["edit_id"] == "half"
    assert out["whole"]["status"] == Status.PENDING and out["whole"]["mask_coverage"] == 1.0


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from diffedit_batch.recipe.clip_score import ClipScorer
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return ClipScorer(str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")), device="cpu")


def test_clip_label_is_the_zero_shot_probability_of_the_rows_class_and_a_floor_on_it_filters(scorer):
    classes = ["cat", "dog", "bird"]
    pictures = [synthetic_photo(32, 32, seed) for seed in range(2)]
    texts = [f"a photo of a {name}" for name in classes]
    probabilities = [scorer.label_probabilities(pictures, texts, [k, k]) for k in range(3)]
    for picture in range(2):
        assert sum(p[picture] for p in probabilities) == pytest.approx(1.0, abs=1e-5)
    assert scorer.label_probabilities(pictures, texts, [None, 1])[0] is None

    config = CandidatesConfig(min={"clip_label": 0.999})
    stage = EditStage(None, EditSettings(), engine=MaskEngine(), batch_size=8, candidates=config, scorer=scorer,
                      label_template="a photo of a {label}", label_classes=classes)
    out = {row["edit_id"]: row for row in stage(to_table([
        _request("dog", class_name="dog"), _request("unknown", class_name="fish")])).to_pylist()}
    assert 0 < out["dog"]["clip_label"] < 0.999 and out["dog"]["status"] == Status.FILTERED
    assert out["dog"]["filter_reason"].startswith("clip_label ") and "< min 0.999" in out["dog"]["filter_reason"]
    assert out["unknown"]["clip_label"] is None
    assert out["unknown"]["filter_reason"] == "clip_label could not be computed (floor 0.999)"
    lenient = EditStage(None, EditSettings(), engine=MaskEngine(), batch_size=8,
                        candidates=CandidatesConfig(min={"clip_label": 0.0}), scorer=scorer,
                        label_template="a photo of a {label}", label_classes=classes)
    [kept] = lenient(to_table([_request("dog", class_name="dog")])).to_pylist()
    assert kept["status"] == Status.PENDING and kept["clip_label"] == pytest.approx(out["dog"]["clip_label"])


def test_a_template_naming_no_column_stops_the_run_before_any_work(tmp_path, job_config, capsys, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from diffedit_batch.cli import main
    from diffedit_batch.pipeline import run_job
    from diffedit_batch.pipeline.preflight import PreflightError

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a"], "image": ["a.png"], "label": [1]}), manifest)
    config = job_config('prompts.targets=["a {label} in {place}"]', "prompts.source=a {label}")
    with pytest.raises(PreflightError, match=r"prompts.targets has placeholder \{place\}, which is not a manifest"):
        run_job(config, str(manifest), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # no lease, no run file: nothing was done
    code = main(["run", "--config", "configs/tiny.yaml", "--input", str(manifest), "--output", str(tmp_path / "out"),
                 "--set", f"model.pretrained={tiny_model_dir}", "--set", 'prompts.targets=["a {label} in {place}"]'])
    assert code == 2 and "{place}" in capsys.readouterr().err


def test_the_caption_fills_a_templates_caption_placeholder():
    from diffedit_batch.data.manifest import needs_caption
    from diffedit_batch.pipeline.stages.captions import apply_caption

    row = {"source_prompt": "a photo of a cat", "target_prompt": "{caption}, in the snow", "source_concept": None,
           "inversion_prompt": None}
    assert needs_caption(row["source_prompt"], None, False, row["target_prompt"])
    assert not needs_caption("a photo of a cat", None, False, "a dog")
    apply_caption(row, "a cat on a mat", caption_inversion=False)
    assert row["target_prompt"] == "a cat on a mat, in the snow" and row["source_prompt"] == "a photo of a cat"
    assert row["inversion_prompt"] is None  # the source conditions the inversion, as it does without a caption


def test_the_preflight_names_every_column_the_config_needs_and_the_manifest_lacks():
    from diffedit_batch.config import config_from_dict
    from diffedit_batch.pipeline.preflight import PreflightError, check_manifest_columns

    config = config_from_dict({"prompts": {"source": "a {label}", "targets": ["{caption} in {place}"],
                                           "label_template": "a photo of a {label}"},
                               "augment": {"balance_by": "klass", "per_class": 3},
                               "region": {"boxes_from": "objects.bbox"}})
    check_manifest_columns(config, ["id", "image", "label", "place", "klass", "objects"])  # {caption}: the BLIP one
    with pytest.raises(PreflightError) as raised:
        check_manifest_columns(config, ["id", "image", "label"])
    message = str(raised.value)
    assert "{place}" in message and "augment.balance_by names column 'klass'" in message
    assert "region.boxes_from names column 'objects'" in message and "\n" not in message


def test_regions_and_a_pasted_background_change_the_settings_fingerprint_only_when_set():
    from diffedit_batch.config import config_from_dict
    from diffedit_batch.config.fingerprint import run_settings

    def fingerprints(**sections):
        return run_settings(config_from_dict({"model": {"family": "sd"}, **sections})).by_use

    plain = fingerprints()
    assert fingerprints(prompts={"targets": ["a {label}"]}, augment={"per_image": 2}) == plain  # the request's part
    assert fingerprints(region={"mode": "outside"}) != plain
    assert fingerprints(output={"paste_background": True}) != plain
    assert fingerprints(output={"paste_background": True, "feather_px": 2}) != fingerprints(
        output={"paste_background": True})
    assert fingerprints(candidates={"min": {"mask_coverage": 0.1}}) != plain  # floors on a single edit


def test_a_region_mask_larger_than_job_max_image_pixels_is_the_rows_error_not_a_decode(tmp_path):
    synthetic_photo(20, 12, 1).save(tmp_path / "p.png")
    huge = _png(Image.new("L", (100, 100), 255))  # 10^4 px: over the 1000 px cap the picture itself is under
    rows = [{"edit_id": "big", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_mask": huge}]
    [out] = fetch_images(to_table(rows), options=OPTIONS, resolution=16, max_pixels=1000).to_pylist()
    assert out["status"] == Status.ERROR and out["error_class"] == ErrorClass.IMAGE_DECODE
    assert out["error"].startswith("region_mask is 100x100 px") and "1000" in out["error"]


def test_any_failure_reading_a_region_mask_is_the_rows_storage_error(tmp_path, monkeypatch):
    """As for the picture itself: a storage client's own exception on one URI is that row's error, not the task's."""
    from diffedit_batch.pipeline.stages import fetch

    synthetic_photo(20, 12, 1).save(tmp_path / "p.png")
    real = fetch.read_bytes

    def read_bytes(uri, options):
        if uri.endswith("mask.png"):
            raise RuntimeError("connection pool is closed")
        return real(uri, options)

    monkeypatch.setattr(fetch, "read_bytes", read_bytes)
    rows = [{"edit_id": "m", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_mask_uri": str(tmp_path / "mask.png")},
            {"edit_id": "plain", "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png")}]
    out = {row["edit_id"]: row for row in fetch_images(to_table(rows), options=OPTIONS, resolution=16,
                                                       max_pixels=10**6).to_pylist()}
    assert out["m"]["status"] == Status.ERROR and out["m"]["error_class"] == ErrorClass.STORAGE
    assert out["m"]["error"].startswith("cannot read region_mask") and "connection pool is closed" in out["m"]["error"]
    assert out["plain"]["status"] == Status.PENDING


def test_clip_label_embeds_the_class_texts_once_per_scorer_not_once_per_batch(scorer, monkeypatch):
    """ImageNet has 1000 classes: re-encoding every class text for every batch of edits would dwarf the scoring."""
    texts = [f"a photo of a {name}" for name in ("cow", "horse", "sheep")]
    calls = []
    embed = scorer.embed_texts
    monkeypatch.setattr(scorer, "embed_texts", lambda batch: calls.append(list(batch)) or embed(batch))
    pictures = [synthetic_photo(32, 32, seed) for seed in range(2)]
    first = scorer.label_probabilities(pictures, texts, [0, 1])
    assert scorer.label_probabilities(pictures, texts, [0, 1]) == first
    assert calls == [texts]
    scorer.label_probabilities(pictures, texts[:2], [0, 1])  # other classes: embedded again
    assert calls == [texts, texts[:2]]


def test_any_failure_reading_the_source_again_to_paste_it_is_the_rows_storage_error(tmp_path, monkeypatch):
    from diffedit_batch.pipeline.stages import write

    def read_source_image(uri, options):
        raise RuntimeError("connection pool is closed")

    monkeypatch.setattr(write, "read_source_image", read_source_image)
    _, row = _edited_row(tmp_path)
    [out] = write_outputs(to_table([row]), output_prefix=str(tmp_path / "out"), options=OPTIONS,
                          output=OutputConfig(paste_background=True), background_metrics=False).to_pylist()
    assert out["status"] == Status.ERROR and out["error_class"] == ErrorClass.STORAGE
    assert "paste its background" in out["error"] and "connection pool is closed" in out["error"]


@pytest.mark.parametrize("fixture, family", [("sd3_engine", "sd3"), ("flux_engine", "flux")])
def test_a_kept_box_through_fetch_edit_and_write_on_the_flow_families(request, tmp_path, fixture, family):
    """Where the two features meet: a picture whose sides are not multiples of 16 px, fetched for SD3 / FLUX.1 (16 px
    sides), its box made a latent constraint for the real tiny engine, the edit written with the input's own pixels
    in the box."""
    synthetic_photo(90, 60, 1).save(tmp_path / "p.png")
    row = {"edit_id": "b", "row_id": "b", "row_index": 0, "status": Status.PENDING,
           "source_image_uri": str(tmp_path / "p.png"), "region_boxes": [[10.5, 5, 30, 20]],
           "source_prompt": "a bowl of fruits", "target_prompt": "a basket of pears", "seed": 1}
    fetched = fetch_images(to_table([row]), options=OPTIONS, resolution=72, max_pixels=10**6, family=family,
                           region_mode="outside")
    [picture] = fetched.to_pylist()
    assert (picture["model_width"], picture["model_height"]) == (80, 48)
    stage = EditStage(None, EditSettings(num_inference_steps=4, num_maps_per_mask=2, mask_thresholding_ratio=1.0),
                      engine=request.getfixturevalue(fixture), batch_size=8)
    edited = stage(fetched)
    [mask_row] = edited.to_pylist()
    assert mask_row["status"] == Status.PENDING and (mask_row["mask_width"], mask_row["mask_height"]) == (10, 6)
    [out] = write_outputs(edited, output_prefix=str(tmp_path / "out"), options=OPTIONS,
                          output=OutputConfig(paste_background=True), background_metrics=True).to_pylist()
    assert out["status"] == Status.OK, out["error"]
    source = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    written = np.asarray(Image.open(out["image_uri"]).convert("RGB"))
    mask = np.asarray(Image.open(out["mask_uri"])) > 0
    assert (written[5:25, 10:41] == source[5:25, 10:41]).all() and not mask[5:25, 10:41].any()
    assert mask.any() and (written[~mask] == source[~mask]).all()
    assert out["mask_coverage"] == pytest.approx(mask.mean())


def test_an_empty_box_list_leaves_nothing_to_edit_inside_and_everything_outside(tmp_path):
    synthetic_photo(16, 16, 1).save(tmp_path / "p.png")
    rows = [{"edit_id": mode, "status": Status.PENDING, "source_image_uri": str(tmp_path / "p.png"),
             "region_boxes": []} for mode in ("inside", "outside")]
    inside = fetch_images(to_table(rows[:1]), options=OPTIONS, resolution=16, max_pixels=10**6, region_mode="inside")
    outside = fetch_images(to_table(rows[1:]), options=OPTIONS, resolution=16, max_pixels=10**6,
                           region_mode="outside")
    [inside], [outside] = inside.to_pylist(), outside.to_pylist()
    assert not unpack(inside["region"], 16, 16).any()
    assert outside["region"] is None  # nothing kept: no constraint at all
    engine = MaskEngine()
    stage = EditStage(None, EditSettings(), engine=engine, batch_size=8)
    request = _request("inside", inside["region"], width=16, height=16, model_width=16, model_height=16,
                       pixels=synthetic_photo(16, 16, 0).tobytes())
    [out] = stage(to_table([request])).to_pylist()
    assert out["status"] == Status.FILTERED and out["filter_reason"].startswith("nothing left to edit")
