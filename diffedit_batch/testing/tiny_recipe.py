"""Tiny random-weight Flan-T5, BLIP and CLIP, built and saved locally in the hub's folder layout.

The recipe's helpers (concept prompts from Flan-T5, inversion captions from BLIP, CLIP scores) load their models
with `from_pretrained`; tests and the offline example cannot download weights, so they load these instead,
through the same code. Weights are random: the text they generate is word salad, but it is real text from a
real tokenizer, of the lengths the real models produce, so every code path (sampling, decoding, batching,
embedding the text) runs as with the real models. Both tokenizers are built here from a small English word
list, with no download. Each builder takes well under a second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .tokenizers import MODEL_MAX_LENGTH, write_clip_tokenizer

# Words of the sort that captions use. Both tiny tokenizers hold them whole. The T5 tokenizer falls back to
# single characters, so every ASCII string tokenizes without an unknown token; the BERT one has no "##"
# continuation pieces (random weights would glue them onto words), so a word it lacks is one [UNK].
CAPTION_WORDS = (
    "a an the of in on at with and or to from by for is are this that these there it its one two three "
    "some many few several photo photograph picture image caption captions view close up top side front back "
    "bowl basket fruit fruits apple apples pear pears orange oranges banana bananas lemon grapes table wooden "
    "kitchen plate cup glass bottle vase flower flowers leaf leaves tree trees grass garden park field sky "
    "cloud clouds sun light shadow window door wall floor room house street road car bike city building "
    "water river lake sea beach sand rock mountain snow winter summer spring autumn morning evening night "
    "cat cats dog dogs bird birds horse cow sheep fish man woman person people child children boy girl "
    "sitting standing lying walking running holding full filled containing made showing looking next near "
    "white black red green blue yellow brown gray grey pink purple small large big little old new fresh "
    "bright dark colorful beautiful english no longer than characters should be provide images"
).split()

_PUNCTUATION = ".,;:!?'\"-()&/"


def _t5_vocab() -> list[tuple[str, float]]:
    """A Unigram vocabulary laid out like T5's: <pad>=0, </s>=1, <unk>=2, then pieces with log-probabilities."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {piece for piece, _ in vocab}
    for word in CAPTION_WORDS:
        for piece in ("▁" + word, "▁" + word.capitalize()):
            if piece not in seen:
                seen.add(piece)
                vocab.append((piece, -5.0))
    characters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + _PUNCTUATION
    for character in characters:
        for piece in (character, "▁" + character):
            if piece not in seen:
                seen.add(piece)
                vocab.append((piece, -10.0))
    return vocab


def build_tiny_flan_t5(folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny random `T5ForConditionalGeneration` and its tokenizer; save them under `folder`.

    The layout is the hub repo's (config.json, generation_config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json), loadable by `AutoTokenizer.from_pretrained(folder)` and
    `T5ForConditionalGeneration.from_pretrained(folder, use_safetensors=True)`. The model is Flan-T5's
    architecture (gated-GELU feed-forward, untied output head) at d_model 32 with 2 encoder and 2 decoder
    layers. Deterministic for a given seed. Returns the folder.
    """
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration, T5Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=512)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    generator = torch.Generator().manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    _randomize(model, generator, std=0.5)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _bert_vocab() -> dict[str, int]:
    """A WordPiece vocabulary: BERT's specials first, whole words and characters, BLIP's [DEC] and [ENC] last."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(dict.fromkeys(CAPTION_WORDS))
    characters = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens += [c for c in characters + _PUNCTUATION if c not in tokens]
    tokens += ["[DEC]", "[ENC]"]
    return {token: i for i, token in enumerate(tokens)}


def build_tiny_blip(folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny random `BlipForConditionalGeneration` and its `BlipProcessor`; save them under `folder`.

    The layout is the hub repo's (config.json, generation_config.json, model.safetensors,
    preprocessor_config.json, processor_config.json, tokenizer files), loadable by
    `BlipProcessor.from_pretrained(folder)` and `BlipForConditionalGeneration.from_pretrained(folder,
    use_safetensors=True)`. Images are resized to 32x32 px and cut into 16 px patches; the tokenizer is a
    lower-casing BERT WordPiece one whose bos token is BLIP's `[DEC]`, and the text config's bos, sep and pad
    ids are the tokenizer's `[DEC]`, `[SEP]` and `[PAD]`, as `BlipForConditionalGeneration.generate` needs.
    Deterministic for a given seed. Returns the folder.
    """
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
        GenerationConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": vocab["[DEC]"],
            "sep_token_id": vocab["[SEP]"],
            "pad_token_id": vocab["[PAD]"],
            "eos_token_id": vocab["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "projection_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=32,
        image_text_hidden_size=32,
    )
    generator = torch.Generator().manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    _randomize(model, generator, std=0.5)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab["[DEC]"], eos_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"]
    )
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


@torch.no_grad()
def _randomize(model: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    """Redraw every weight matrix from one seeded generator (biases and norms keep their init).

    With transformers' own init (drawn from the global RNG), the tiny BLIP captions every picture alike (its
    vision weights start at std 1e-10) and the tiny T5 ends every caption at once (empty strings). A wider draw
    from a private generator makes the text varied and image-dependent, and the build reproducible without
    touching global state.
    """
    for name, parameter in sorted(model.named_parameters()):
        if parameter.ndim >= 2:
            fan_in = parameter.shape[-1]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (std / fan_in**0.5) * 4)


def build_tiny_clip(folder: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Build a tiny random CLIP (model + CLIPProcessor) and save it under ``folder``; return the folder.

    Uses the tiny Stable Diffusion's byte-level BPE tokenizer, so every prompt tokenizes offline.
    Deterministic for a given seed.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        write_clip_tokenizer(Path(tokenizer_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": MODEL_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": image_size, "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
