"""Augmenting a labelled dataset end to end: a `datasets` Parquet (ClassLabel, COCO boxes) in, templates, class
balance, boxes kept bit for bit, clip_label, the records' classes, resume, the export and the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.data.export import export_dataset
from diffedit_batch.pipeline import run_job
from diffedit_batch.report import build_report
from diffedit_batch.testing.pictures import synthetic_photo

from .conftest import read_records

pytestmark = pytest.mark.slow

CLASSES = ["cat", "dog", "bird"]
TARGETS = ["a photo of a {label} in the snow", "a painting of a {label}", "a {label} at night"]
BOX = [4.5, 6.0, 20.0, 16.0]  # x 4..24, y 6..22 once rounded outward


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _dataset(folder: Path) -> Path:
    """5 cats, 2 dogs, 1 bird and a row without a label, written by `datasets` with its features."""
    from datasets import ClassLabel, Dataset, Features, List, Value

    labels = [0, 0, 0, 0, 0, 1, 1, 2, None]
    ids = [f"r{i}" for i in range(len(labels))]
    for i, name in enumerate(ids):
        synthetic_photo(64, 48, i).save(folder / f"{name}.png")
    features = Features({"id": Value("string"), "image": Value("string"),
                         "label": ClassLabel(names=CLASSES),
                         "objects": {"bbox": List(List(Value("float32"), length=4)), "category": List(Value("int64"))}})
    dataset = Dataset.from_dict({"id": ids, "image": [f"{name}.png" for name in ids], "label": labels,
                                 "objects": [{"bbox": [BOX], "category": [0]} for _ in ids]}, features=features)
    dataset.to_parquet(str(folder / "train.parquet"))
    return folder / "train.parquet"


def test_a_labelled_dataset_is_augmented_balanced_with_its_boxes_kept(ray_local, job_config, tiny_clip, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    manifest = _dataset(folder)
    output = tmp_path / "out"
    config = job_config(
        "prompts.source=a photo of a {label}", f"prompts.targets={TARGETS!r}",
        "prompts.label_template=a photo of a {label}", "augment.balance_by=label", "augment.per_class=4",
        "region.boxes_from=objects.bbox", "region.mode=outside", "output.paste_background=true",
        f"metrics.clip_model={tiny_clip}", "metrics.clip_device=cpu", "candidates.min={clip_label: 0.0}",
        "edit.num_inference_steps=4")
    summary = run_job(config, str(manifest), str(output))
    records = read_records(output)
    invalid = [r for r in records if r["status"] == "error"]
    assert [(r["id"], r["error_class"]) for r in invalid] == [("r8", "invalid_row")]
    assert "'label' is null" in invalid[0]["error"]
    edits = [r for r in records if r["status"] != "error"]
    # 4 edits per class, or as many as its rows allow (one bird: its three targets)
    assert Counter(r["class_name"] for r in edits) == {"cat": 4, "dog": 4, "bird": 3}
    assert summary.ok + summary.filtered == 11 and summary.failed == 1
    assert Counter(r["row_id"] for r in edits if r["class_name"] == "dog") == {"r5": 2, "r6": 2}
    for record in edits:
        row, k = record["id"].split("#")
        label = CLASSES[[0, 0, 0, 0, 0, 1, 1, 2][int(row[1:])]]
        assert record["source_prompt"] == f"a photo of a {label}"
        assert record["target_prompt"] == TARGETS[int(k)].format(label=label)
    ok = [r for r in edits if r["status"] == "ok"]
    assert ok, "no edit passed"
    for record in ok:
        assert 0.0 <= record["clip_label"] <= 1.0
        source = np.asarray(Image.open(record["source_image_uri"]).convert("RGB"))
        written = np.asarray(Image.open(record["image_uri"]).convert("RGB"))
        mask = np.asarray(Image.open(record["mask_uri"])) > 0
        assert (written[6:22, 4:25] == source[6:22, 4:25]).all()  # the labelled object: the input's own pixels
        assert not mask[6:22, 4:25].any() and (written[~mask] == source[~mask]).all()
        assert record["mask_coverage"] == pytest.approx(mask.mean())

    again = run_job(config, str(manifest), str(output))
    assert (again.ok, again.filtered, again.skipped) == (0, 0, 11)  # the same draws, the same ids
    assert export_dataset(str(output), str(tmp_path / "export")).rows == len(ok)
    import pyarrow.dataset as ds

    exported = ds.dataset(str(tmp_path / "export"), format="parquet").to_table(columns=["id", "class_name"])
    assert dict(zip(*exported.to_pydict().values())) == {r["id"]: r["class_name"] for r in ok}
    report = build_report(str(output), workers=2, thumbnails=False)
    page = Path(report.index_uri).read_text()
    assert "Edits per class" in page and "<td>bird</td>" in page


def test_a_caption_placeholder_is_filled_with_the_pictures_blip_caption(ray_local, job_config, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(2):
        synthetic_photo(48, 48, i).save(tmp_path / f"p{i}.png")
    pq.write_table(pa.table({"id": ["a", "b"], "image": ["p0.png", "p1.png"], "label": ["cat", "dog"]}),
                   tmp_path / "m.parquet")
    config = job_config("prompts.source=a photo of a {label}", 'prompts.targets=["{caption} at night", "a {label}"]',
                        "edit.num_inference_steps=4")
    summary = run_job(config, str(tmp_path / "m.parquet"), str(tmp_path / "out"))
    assert summary.ok == 4, summary.line()
    records = {r["id"]: r for r in read_records(tmp_path / "out")}
    for row, label in (("a", "cat"), ("b", "dog")):
        night = records[f"{row}#0"]
        assert night["caption"] and night["target_prompt"] == f"{night['caption']} at night"
        assert night["source_prompt"] == f"a photo of a {label}" and night["inversion_prompt"] is None
        assert records[f"{row}#1"]["target_prompt"] == f"a {label}"
