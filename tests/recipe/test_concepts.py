"""Concept prompts: seeded Flan-T5 captions per distinct concept, and their mean Stable Diffusion embedding."""

from __future__ import annotations

import pytest
import torch

from diffedit_batch.engine.settings import EditSettings
from diffedit_batch.recipe.concepts import ConceptPromptGenerator, concept_embedding, embed_prompts
from diffedit_batch.recipe.defaults import DEFAULT_CONCEPT_INSTRUCTION
from diffedit_batch.seeds import concept_seed

from .conftest import photo

FAST = {"num_captions": 4, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def tiny_flan_t5_dir(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_flan_t5

    return build_tiny_flan_t5(tmp_path_factory.mktemp("models") / "tiny-flan-t5")


@pytest.fixture(scope="module")
def generator(tiny_flan_t5_dir):
    return ConceptPromptGenerator.from_pretrained(str(tiny_flan_t5_dir), device="cpu")


def count_generate(monkeypatch, generator) -> list[dict]:
    """Record the keyword arguments (and decoded input) of every `generate` call of the generator's model."""
    calls = []
    original = generator.model.generate

    def counting(*args, **kwargs):
        calls.append({**kwargs, "text": generator.tokenizer.decode(kwargs["input_ids"][0], skip_special_tokens=True)})
        return original(*args, **kwargs)

    monkeypatch.setattr(generator.model, "generate", counting)
    return calls


def test_tiny_flan_t5_loads_through_the_real_classes(tiny_flan_t5_dir, generator):
    from transformers import T5ForConditionalGeneration

    names = {path.name for path in tiny_flan_t5_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)
    assert isinstance(generator.model, T5ForConditionalGeneration)
    assert generator.model.dtype == torch.float32 and generator.device == torch.device("cpu")
    # The local tokenizer covers ordinary English without unknown tokens.
    ids = generator.tokenizer(DEFAULT_CONCEPT_INSTRUCTION.replace("{concept}", "xylophone")).input_ids
    assert generator.tokenizer.unk_token_id not in ids
    assert ids[-1] == generator.tokenizer.eos_token_id


def test_captions_per_concept_are_sampled_strings(generator):
    captions = generator.generate_concept_prompts(["bowl", "basket"], **FAST)
    assert list(captions) == ["bowl", "basket"]
    for texts in captions.values():
        assert len(texts) == 4 and all(isinstance(text, str) for text in texts)
        assert any(texts) and len(set(texts)) > 1  # sampled, not one greedy caption repeated
    assert captions["bowl"] != captions["basket"]


def test_captions_are_deterministic_and_independent_of_other_concepts(generator):
    alone = generator.generate_concept_prompts(["bowl"], **FAST)["bowl"]
    assert generator.generate_concept_prompts(["bowl"], **FAST)["bowl"] == alone
    assert generator.generate_concept_prompts(["basket", "cat", "bowl"], **FAST)["bowl"] == alone
    assert generator.generate_concept_prompts(["bowl", "basket"], **FAST)["basket"] == (
        generator.generate_concept_prompts(["basket"], **FAST)["basket"]
    )
    # The seed is an input: another seed samples other captions.
    assert generator.generate_concept_prompts(["bowl"], seed=1, **FAST)["bowl"] != alone
    assert concept_seed(0, "bowl") == concept_seed(0, "bowl") != concept_seed(1, "bowl")


def test_sampling_leaves_the_global_rng_alone(generator):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    generator.generate_concept_prompts(["bowl"], **FAST)
    assert torch.equal(torch.rand(3), expected)


def test_one_generate_call_per_distinct_concept(monkeypatch, generator):
    calls = count_generate(monkeypatch, generator)
    before = generator.generate_calls
    captions = generator.generate_concept_prompts(
        ["bowl", "basket", "bowl"], instruction="Describe a {concept}.", temperature=0.5, top_k=3, **FAST
    )
    assert list(captions) == ["bowl", "basket"]
    assert len(calls) == 2 and generator.generate_calls - before == 2
    assert [call["text"] for call in calls] == ["Describe a bowl.", "Describe a basket."]
    for call in calls:
        assert call["do_sample"] is True and call["num_return_sequences"] == 4
        assert (call["temperature"], call["top_k"], call["max_new_tokens"]) == (0.5, 3, 12)


@pytest.mark.parametrize("concepts", [[None], [""], ["bowl", "   "]])
def test_empty_or_missing_concept_is_a_value_error(generator, concepts):
    with pytest.raises(ValueError, match=r"concept \d+ is (None|empty)"):
        generator.generate_concept_prompts(concepts, **FAST)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"instruction": "Describe a thing."}, "instruction must contain {concept}"),
        ({"num_captions": 0}, "num_captions must be a positive integer"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
    ],
)
def test_bad_settings_are_value_errors(generator, settings, message):
    with pytest.raises(ValueError, match=message):
        generator.generate_concept_prompts(["bowl"], **{**FAST, **settings})


def test_a_single_string_is_not_taken_for_a_list(generator):
    with pytest.raises(TypeError, match="not one string"):
        generator.generate_concept_prompts("bowl", **FAST)


# --- embeddings --------------------------------------------------------------------------------------------


def guide_embed_prompts(sentences, tokenizer, text_encoder):
    """The DiffEdit guide's `embed_prompts`, verbatim apart from the device."""
    embeddings = []
    for sent in sentences:
        text_inputs = tokenizer(
            sent, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        prompt_embeds = text_encoder(text_inputs.input_ids, attention_mask=None)[0]
        embeddings.append(prompt_embeds)
    return torch.concatenate(embeddings, dim=0).mean(dim=0).unsqueeze(0)


CAPTIONS = [
    "a bowl of fruits on a wooden table",
    "a photo of a bowl",
    "a photo of a bowl",  # repeats count in the mean
    "pears " * 60,  # longer than 77 tokens: truncated as encode_prompt does
    "",
]


@torch.no_grad()
def test_mean_embedding_matches_the_guide(engine):
    expected = guide_embed_prompts(CAPTIONS, engine.tokenizer, engine.text_encoder)
    standalone = embed_prompts(CAPTIONS, engine.text_encoder, engine.tokenizer)
    through_engine = concept_embedding(engine, CAPTIONS).tokens
    hidden = engine.text_encoder.config.hidden_size
    assert standalone.shape == through_engine.shape == (1, engine.tokenizer.model_max_length, hidden)
    torch.testing.assert_close(standalone, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(through_engine, expected, rtol=0, atol=1e-6)
    # Not just any embedding: dropping the repeat changes the mean.
    assert not torch.allclose(embed_prompts(CAPTIONS[1:], engine.text_encoder, engine.tokenizer), expected)


def test_generated_captions_embed(generator, engine):
    captions = generator.generate_concept_prompts(["bowl"], **FAST)["bowl"]
    torch.testing.assert_close(
        concept_embedding(engine, captions).tokens,
        guide_embed_prompts(captions, engine.tokenizer, engine.text_encoder),
        rtol=0,
        atol=1e-6,
    )


def test_embedding_is_a_prompt_for_the_engine(engine):
    """The mean of one caption is that caption's encoding: the edit is the same as with the text."""
    settings = EditSettings(num_inference_steps=2, num_maps_per_mask=1)
    image = photo(32, 32, 3)
    source = concept_embedding(engine, ["a bowl of fruits"])
    target = concept_embedding(engine, ["a basket of fruits"])
    [by_embedding] = engine.edit([image], [source], [target], [7], settings)
    [by_text] = engine.edit([image], ["a bowl of fruits"], ["a basket of fruits"], [7], settings)
    assert (by_embedding.mask == by_text.mask).all()
    assert by_embedding.image.tobytes() == by_text.image.tobytes()


@pytest.mark.parametrize("captions, error", [([], ValueError), ("a bowl", TypeError), ([None], TypeError)])
def test_bad_caption_lists_are_rejected(engine, captions, error):
    with pytest.raises(error):
        concept_embedding(engine, captions)


def test_a_long_concept_is_read_without_transformers_indexing_warning(generator, transformers_warnings):
    # The warning reached the driver's console from every concept actor (issue 27); T5 reads long inputs whole.
    captions = generator.generate_concept_prompts(["cat " * 600], num_captions=1, max_new_tokens=3)
    assert [len(texts) for texts in captions.values()] == [1]
    assert not [message for message in transformers_warnings if "indexing errors" in message]
