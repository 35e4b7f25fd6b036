"""Tokenizers built locally, with no download: the byte-level CLIP BPE the tiny models share."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_MAX_LENGTH = 77  # CLIP's context, so long prompts are truncated exactly as with the real tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (the BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> None:
    """A byte-level CLIP BPE tokenizer over the 256 byte symbols plus a few common merges.

    Every string tokenizes (unknown words fall back to bytes), and long prompts exceed 77 tokens exactly as
    with the real tokenizer, so truncation paths are exercised. `pad_token`: SDXL's second tokenizer pads with "!".
    """
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    merges = []
    for word in ("a", "of", "the", "photo", "bowl", "basket", "fruits", "pears", "cat", "dog"):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            if merged not in vocab:
                vocab[merged] = len(vocab)
            pieces = [merged] + pieces[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), pad_token=pad_token)
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    tokenizer.save_pretrained(folder)


def write_t5_tokenizer(folder: Path, model_max_length: int = 512) -> None:
    """A T5 Unigram tokenizer laid out like T5's (<pad>=0, </s>=1, <unk>=2), over common caption words and single
    characters (every ASCII string tokenizes), as the SD3 and FLUX.1 repos' `tokenizer_3` / `tokenizer_2`."""
    from transformers import T5Tokenizer

    from .tiny_recipe import _t5_vocab

    folder.mkdir(parents=True, exist_ok=True)
    T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=model_max_length).save_pretrained(folder)
