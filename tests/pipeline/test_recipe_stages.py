"""The recipe stages on their own (no Ray): who gets a caption, what it replaces, one caption per picture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffedit_batch.config import load_config
from diffedit_batch.data.manifest import needs_caption
from diffedit_batch.data.status import Status
from diffedit_batch.pipeline.rows import to_table
from diffedit_batch.pipeline.stages.captions import CaptionStage, apply_caption
from diffedit_batch.pipeline.stages.concepts import ConceptStage

from .conftest import REPO


def _row(**values):
    row = {"status": Status.PENDING, "source_prompt": None, "inversion_prompt": None, "source_concept": None,
           "target_prompt": "a dog", "target_concept": None}
    return {**row, **values}


def test_caption_rules():
    def needs(row, caption_inversion):
        return needs_caption(row["source_prompt"], row["source_concept"], caption_inversion)

    assert needs(_row(), caption_inversion=False)
    assert not needs(_row(source_prompt="a cat"), caption_inversion=False)
    assert not needs(_row(source_concept="cat"), caption_inversion=False)
    assert needs(_row(source_prompt="a cat"), caption_inversion=True)

    no_source = _row()
    apply_caption(no_source, "a photograph of a cat", caption_inversion=False)
    assert no_source["inversion_prompt"] == no_source["source_prompt"] == "a photograph of a cat"

    asked = _row(source_prompt="a cat", inversion_prompt="given")
    apply_caption(asked, "a photograph of a cat", caption_inversion=True)
    assert (asked["source_prompt"], asked["inversion_prompt"]) == ("a cat", "a photograph of a cat")

    concept = _row(source_concept="cat")
    apply_caption(concept, "caption", caption_inversion=True)
    assert concept["source_prompt"] is None and concept["inversion_prompt"] == "caption"


@pytest.fixture
def recipe_config(tiny_config_overrides):
    return load_config(REPO / "configs" / "tiny.yaml", tiny_config_overrides)


def test_caption_stage_captions_each_picture_once(recipe_config):
    stage = CaptionStage(recipe_config.captions)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)) for _ in range(2)]
    rows = []
    for i, picture in enumerate([pictures[0], pictures[0], pictures[1], pictures[0]]):
        rows.append(_row(edit_id=str(i), model_width=48, model_height=32, pixels=picture.tobytes(),
                         source_prompt="given" if i == 3 else None))
    out = stage(to_table(rows)).to_pylist()
    assert stage.captioner.images_captioned == 2
    assert out[0]["caption"] == out[1]["caption"] and out[0]["caption"]
    assert out[3]["caption"] is None and out[3]["source_prompt"] == "given"  # it had a source
    again = stage(to_table(rows[:1])).to_pylist()
    assert stage.captioner.images_captioned == 2 and again[0]["caption"] == out[0]["caption"]


def test_concept_stage_is_seeded_and_per_concept(recipe_config):
    import pyarrow as pa

    stage = ConceptStage(recipe_config.concepts)
    both = stage(pa.table({"concept": ["cat", "dog"]})).to_pylist()
    alone = stage(pa.table({"concept": ["dog"]})).to_pylist()
    assert both[1] == alone[0] and len(alone[0]["captions"]) == recipe_config.concepts.num_captions


def test_a_picture_that_breaks_the_captioner_fails_only_its_own_rows(recipe_config, monkeypatch):
    stage = CaptionStage(recipe_config.captions)
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)) for _ in range(3)]
    real = stage.captioner.caption_images

    def caption_images(images, **kwargs):
        if any(image.tobytes() == pictures[1].tobytes() for image in images):
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(images, **kwargs)

    monkeypatch.setattr(stage.captioner, "caption_images", caption_images)
    rows = [_row(edit_id=str(i), model_width=48, model_height=32, pixels=picture.tobytes(), source_prompt=None)
            for i, picture in enumerate(pictures)]
    out = stage(to_table(rows)).to_pylist()
    assert [row["status"] for row in out] == [Status.PENDING, Status.ERROR, Status.PENDING]
    assert out[1]["error_class"] == "engine" and "illegal memory access" in out[1]["error"]
    assert out[1]["pixels"] is None  # a failed row stops carrying its picture
    assert out[0]["caption"] and out[2]["caption"]
