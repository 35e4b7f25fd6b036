"""Inversion captions: BLIP conditional captioning, one model pass per distinct picture, greedy and aligned."""

from __future__ import annotations

import PIL.Image
import pytest
import torch

from diffedit_batch.engine.pictures import picture_key
from diffedit_batch.recipe.captions import ImageCaptioner

from .conftest import photo


@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(tiny_blip_dir):
    return ImageCaptioner.from_pretrained(str(tiny_blip_dir), device="cpu", batch_size=3)


@pytest.fixture
def vision_batches(monkeypatch, captioner):
    """The batch sizes the vision encoder saw, one entry per forward call."""
    sizes: list[int] = []
    handle = captioner.model.vision_model.register_forward_hook(
        lambda module, args, kwargs, output: sizes.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    yield sizes
    handle.remove()


PICTURES = [photo(48, 40, seed) for seed in range(4)]


def test_tiny_blip_loads_through_the_real_classes(tiny_blip_dir, captioner):
    from transformers import BlipForConditionalGeneration, BlipProcessor

    names = {path.name for path in tiny_blip_dir.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)
    assert isinstance(captioner.model, BlipForConditionalGeneration)
    assert isinstance(captioner.processor, BlipProcessor)
    tokenizer, text_config = captioner.processor.tokenizer, captioner.model.config.text_config
    # What BlipForConditionalGeneration.generate relies on: [DEC] starts decoding, [SEP] ends it.
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == text_config.bos_token_id
    assert tokenizer.sep_token_id == text_config.sep_token_id and tokenizer.pad_token_id == text_config.pad_token_id


def test_captions_continue_the_prompt_and_align_with_inputs(captioner):
    images = [PICTURES[0], PICTURES[1], PICTURES[0], PICTURES[2]]
    captions = captioner.caption_images(images, max_new_tokens=6)
    assert len(captions) == 4 and all(isinstance(caption, str) for caption in captions)
    assert all(caption.startswith("a photograph of ") for caption in captions)
    assert captions[0] == captions[2]
    # Random weights still tell these pictures apart, so alignment is observable.
    assert len({captions[0], captions[1], captions[3]}) == 3
    assert captioner.caption_images([PICTURES[2], PICTURES[1]], max_new_tokens=6) == [captions[3], captions[1]]


def test_repeated_pictures_are_captioned_once(captioner, vision_batches):
    before = captioner.images_captioned
    # Five distinct pictures (one an equal copy with another mode), nine entries, batches of three.
    copy = PICTURES[1].convert("RGBA")
    images = [PICTURES[0], PICTURES[1], PICTURES[0], copy, PICTURES[2], PICTURES[3], PICTURES[3], photo(32, 32, 9)]
    captions = captioner.caption_images(images, max_new_tokens=4)
    assert picture_key(copy) == picture_key(PICTURES[1])
    assert sorted(vision_batches, reverse=True) == [3, 2] and captioner.images_captioned - before == 5
    assert captions[0] == captions[2] and captions[1] == captions[3] and captions[5] == captions[6]


def test_captions_are_deterministic_and_independent_of_batch_mates(captioner):
    together = captioner.caption_images(PICTURES, max_new_tokens=5)
    assert captioner.caption_images(PICTURES, max_new_tokens=5) == together
    alone = [captioner.caption_images([picture], max_new_tokens=5)[0] for picture in PICTURES]
    assert alone == together


def test_prompt_and_max_new_tokens_shape_the_caption(captioner):
    [short] = captioner.caption_images([PICTURES[0]], max_new_tokens=1)
    [longer] = captioner.caption_images([PICTURES[0]], max_new_tokens=5)
    assert short.startswith("a photograph of ") and len(short.split()) == 4
    assert longer.startswith(short) and len(longer.split()) > 4
    [other] = captioner.caption_images([PICTURES[0]], prompt="a picture of", max_new_tokens=3)
    assert other.startswith("a picture of ")
    [unconditional] = captioner.caption_images([PICTURES[0]], prompt=None, max_new_tokens=3)
    assert isinstance(unconditional, str) and not unconditional.startswith("a photograph of")


def test_empty_input_and_bad_entries(captioner):
    assert captioner.caption_images([]) == []
    with pytest.raises(TypeError, match="image 1 must be a PIL image"):
        captioner.caption_images([PICTURES[0], torch.zeros(3, 8, 8)])
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        captioner.caption_images([PICTURES[0]], max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ImageCaptioner(captioner.model, captioner.processor, batch_size=0)


def test_grayscale_and_odd_sizes_are_captioned(captioner):
    gray = PICTURES[0].convert("L")
    tiny = PIL.Image.new("RGB", (3, 5), (200, 10, 10))
    captions = captioner.caption_images([gray, tiny], max_new_tokens=3)
    assert all(caption.startswith("a photograph of ") for caption in captions)
