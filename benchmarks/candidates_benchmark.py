"""Candidates benchmark: the work and time per candidate when each request becomes `count` candidates (issue 25).

Engine level, no Ray: for each request, the candidates `recipe.candidates.draw_candidates` draws (varying the mask
threshold, the inpaint strength and the guidance scale, and with `--vary-seed` cases the seed too) go to one
`DiffEditEngine.edit` call with one settings object per row, as the edit actor sends them. For count 1, 4 and 8, with
the seed fixed and varied, it prints UNet sample-evaluations per candidate (counted with forward hooks, beside the
count the sharing rules predict: the mask's 2 x maps predictions once per picture and seed, the inversion walked once
to the longest strength, 2 x K edit samples per candidate with K = its edit steps) and candidates/s. Then the CLIP
scoring's CPU seconds per candidate (`ClipScorer.edit_scores` on one request's candidates at a time) on the tiny CLIP
of the tests, and with `--clip-b32` on a random CLIP of ViT-B/32's size built from a config (random weights: the cost
is the real model's, the scores mean nothing).

    .venv/bin/python benchmarks/candidates_benchmark.py            # 50 steps, 10 maps, counts 1,4,8, 2 requests
    .venv/bin/python benchmarks/candidates_benchmark.py --clip-b32 --json figures.json
    .venv/bin/python benchmarks/candidates_benchmark.py --quick    # 10 steps, 2 maps, 1 request, 64 px

The random Stable Diffusion and the measuring (hooks, other processes' load from /proc/stat) are engine_benchmark's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from engine_benchmark import (  # noqa: E402
    PICTURES, OtherLoad, _channels, _cpu_model, _load, build_model, measured, parameter_counts, sample_photo,
)

from diffedit_batch import DiffEditEngine, EditSettings  # noqa: E402
from diffedit_batch.recipe.candidates import Candidate, draw_candidates  # noqa: E402
from diffedit_batch.testing.pictures import synthetic_photo  # noqa: E402

VARY = {"mask_thresholding_ratio": [2, 4], "inpaint_strength": [0.5, 0.8], "guidance_scale": [7.5, 15]}
# Issue 25: count 4 varying threshold, strength and guidance, seed fixed, default steps: at most this many UNet
# sample-evaluations per candidate (an independent edit at strength 0.8 costs 180).
TARGET_UNET_PER_CANDIDATE = {4: 110}


def expected_unet_samples(candidates: list[Candidate]) -> int:
    """The UNet sample-evaluations the engine's sharing rules predict for one request's candidates (one picture, one
    source and target): per seed, the mask's 2 x maps predictions (thresholds are post-processing) and one inversion
    walked to the longest edit (1 or 2 samples a step, guided or not); 1 or 2 x K edit samples per candidate."""
    by_seed: dict[int, list[EditSettings]] = defaultdict(list)
    for candidate in candidates:
        by_seed[candidate.seed].append(candidate.settings)
    total = 0
    for settings in by_seed.values():
        first = settings[0]
        total += 2 * first.num_maps_per_mask
        total += (2 if first.inversion_guided else 1) * max(s.edit_steps for s in settings)
        total += sum((2 if s.edit_guided else 1) * s.edit_steps for s in settings)
    return total


def requests(count: int, size: int, synthetic: bool) -> list[tuple]:
    """`count` requests (picture, source, target, seed): one per picture."""
    out = []
    for i in range(count):
        name, source, targets = PICTURES[i % len(PICTURES)]
        picture = synthetic_photo(size, size, seed=i) if synthetic else sample_photo(name, size)
        out.append((picture, source, targets[0], 1000 + i))
    return out


def run_case(engine, work: list[tuple], base: EditSettings, count: int, vary_seed: bool) -> dict:
    vary = {**VARY, "seed": True} if vary_seed else dict(VARY)
    calls = [(request, draw_candidates(base, vary, count, request[3])) for request in work]
    figures: dict = {}
    with measured(engine, figures):
        for (picture, source, target, _), candidates in calls:
            n = len(candidates)
            engine.edit([picture] * n, [source] * n, [target] * n, [c.seed for c in candidates],
                        settings=[c.settings for c in candidates])
    candidates = count * len(work)
    unet = figures["models"]["unet"]["samples"]
    return {
        "count": count,
        "vary_seed": vary_seed,
        "requests": len(work),
        "candidates": candidates,
        "unet_samples_per_candidate": unet / candidates,
        "expected_unet_samples_per_candidate": sum(expected_unet_samples(c) for _, c in calls) / candidates,
        "independent_unet_samples_per_candidate": sum(expected_unet_samples([c]) for _, cs in calls for c in cs)
        / candidates,
        "unet_calls_per_candidate": figures["models"]["unet"]["calls"] / candidates,
        "seconds": figures["seconds"],
        "candidates_per_s": candidates / figures["seconds"],
        "cpu_seconds_per_candidate": figures["cpu_seconds"] / candidates,
        "other_load": figures["other_load"],
    }


# ---------------------------------------------------------------------------------------------- CLIP scoring


def build_b32_clip(folder: Path) -> Path:
    """A random CLIP with ViT-B/32's sizes (vision 768 x 12 layers, 32 px patches at 224 px; text 512 x 12 layers;
    projection 512) and the tests' offline tokenizer; cached in `folder`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from diffedit_batch.testing.tokenizers import MODEL_MAX_LENGTH, write_clip_tokenizer

    if (folder / "model.safetensors").exists():
        return folder
    print(f"building a ViT-B/32-sized random CLIP in {folder} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 512, "intermediate_size": 2048,
                     "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": MODEL_MAX_LENGTH,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
        projection_dim=512,
    )
    CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def clip_costs(folder: Path, work: list[tuple], counts: list[int], repeats: int) -> dict:
    """CPU and wall seconds per candidate of `ClipScorer.edit_scores` over one request's candidates at a time (their
    input and prompts embedded once), best of `repeats`; edits stand in as copies of the input, shifted."""
    from PIL import ImageOps

    from diffedit_batch.recipe.clip_score import ClipScorer

    scorer = ClipScorer(str(folder), device="cpu")
    parameters = sum(p.numel() for p in scorer.model.parameters())
    figures = {"model": str(folder), "parameters": parameters, "per_count": {}}
    for count in counts:
        edits = {id(picture): [ImageOps.posterize(picture, 1 + k % 8) for k in range(count)]
                 for picture, *_ in work}
        scorer.edit_scores([work[0][0]] * count, edits[id(work[0][0])], [work[0][1]] * count, [work[0][2]] * count)
        best = None
        for _ in range(repeats):
            with OtherLoad() as load:
                for picture, source, target, _ in work:
                    scorer.edit_scores([picture] * count, edits[id(picture)], [source] * count, [target] * count)
            run = {"cpu_seconds_per_candidate": load.cpu_seconds / (count * len(work)),
                   "seconds_per_candidate": load.seconds / (count * len(work)), "other_load": load.cores}
            if best is None or run["cpu_seconds_per_candidate"] < best["cpu_seconds_per_candidate"]:
                best = run
        figures["per_count"][count] = best
    return figures


# ---------------------------------------------------------------------------------------------- the benchmark


def run(options: argparse.Namespace) -> dict:
    if options.threads:
        torch.set_num_threads(options.threads)
    base = EditSettings(num_inference_steps=options.steps, num_maps_per_mask=options.maps)
    if options.model:
        folder = Path(options.model)
        sizes = None
    else:
        sizes = {"seed": 0, "unet_channels": list(options.unet_channels), "layers_per_block": options.layers_per_block,
                 "cross_attention_dim": options.cross_attention_dim, "vae_channels": list(options.vae_channels)}
        folder = build_model(Path(options.model_dir or HERE.parent / ".cache" / "bench-sd"), sizes)
    engine = DiffEditEngine.from_pretrained(str(folder), device="cpu", dtype=torch.float32,
                                            max_unet_batch=options.max_unet_batch)
    work = requests(options.requests, options.size, options.synthetic)
    print("warming up (one edit) ...", flush=True)
    picture, source, target, seed = work[0]
    engine.edit([picture], [source], [target], [seed], settings=base.replace(num_inference_steps=2))
    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": {"processor": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "model": {"folder": str(folder), "sizes": sizes, "image_px": options.size,
                  "parameters": parameter_counts(engine)},
        "settings": {"num_inference_steps": base.num_inference_steps, "num_maps_per_mask": base.num_maps_per_mask,
                     "vary": VARY},
        "cases": [],
    }
    for vary_seed in (False, True):
        for count in options.counts:
            if count == 1 and vary_seed:
                continue  # one candidate keeps the request's seed: the same case
            started = time.perf_counter()
            case = run_case(engine, work, base, count, vary_seed)
            figures["cases"].append(case)
            print(f"  count {count}, seed {'varied' if vary_seed else 'fixed'}: "
                  f"{case['unet_samples_per_candidate']:.1f} UNet samples/candidate, "
                  f"{case['candidates_per_s']:.3f} candidates/s ({time.perf_counter() - started:.0f} s, others "
                  f"{_load(case['other_load'])} cores)", flush=True)
    if options.clip:
        from diffedit_batch.testing.tiny_recipe import build_tiny_clip

        tiny = HERE.parent / ".cache" / "bench-clip-tiny"
        if not (tiny / "model.safetensors").exists():
            build_tiny_clip(tiny)
        figures["clip"] = {"tiny": clip_costs(tiny, work, options.counts, options.clip_repeats)}
        if options.clip_b32:
            b32 = build_b32_clip(HERE.parent / ".cache" / "bench-clip-b32")
            figures["clip"]["vit_b32_sized"] = clip_costs(b32, work, options.counts, options.clip_repeats)
    return figures


def report(figures: dict) -> str:
    m, model, s = figures["machine"], figures["model"], figures["settings"]
    params = model["parameters"]
    lines = [
        f"DiffEdit candidates benchmark, {figures['date']}",
        f"machine: {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads",
        f"model: random SD, UNet {params['unet'] / 1e6:.2f}M parameters; sizes {model['sizes'] or model['folder']}; "
        f"images {model['image_px']} px",
        f"settings: {s['num_inference_steps']} steps, {s['num_maps_per_mask']} maps; vary {json.dumps(s['vary'])}",
        "",
        f"{'count':>5} {'seed':>7} {'cands':>6} {'UNet/cand':>10} {'expected':>9} {'independent':>12} "
        f"{'target':>7} {'cand/s':>8} {'CPU s/cand':>11} {'others':>7}",
    ]
    for case in figures["cases"]:
        default = (s["num_inference_steps"], s["num_maps_per_mask"]) == (50, 10)  # where the target applies
        target = TARGET_UNET_PER_CANDIDATE.get(case["count"]) if default and not case["vary_seed"] else None
        lines.append(
            f"{case['count']:>5} {'varied' if case['vary_seed'] else 'fixed':>7} {case['candidates']:>6} "
            f"{case['unet_samples_per_candidate']:>10.1f} {case['expected_unet_samples_per_candidate']:>9.1f} "
            f"{case['independent_unet_samples_per_candidate']:>12.1f} {('<= ' + str(target)) if target else '':>7} "
            f"{case['candidates_per_s']:>8.3f} {case['cpu_seconds_per_candidate']:>11.2f} "
            f"{_load(case['other_load']):>7}")
    for name, clip in figures.get("clip", {}).items():
        lines += ["", f"CLIP scoring ({name}, {clip['parameters'] / 1e6:.1f}M parameters): CPU s per candidate, "
                  "by candidates per request"]
        for count, run in clip["per_count"].items():
            lines.append(f"  {count}: {run['cpu_seconds_per_candidate']:.4f} CPU s, {run['seconds_per_candidate']:.4f}"
                         f" s wall (others {_load(run['other_load'])} cores)")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorthand for --steps 10 --maps 2 --requests 1 --size 64 --synthetic --counts 1,4")
    parser.add_argument("--steps", type=int, help="num_inference_steps (default 50)")
    parser.add_argument("--maps", type=int, help="num_maps_per_mask (default 10)")
    parser.add_argument("--counts", type=_channels, help="candidates per request (default 1,4,8)")
    parser.add_argument("--requests", type=int, help="requests (pictures) per case (default 2)")
    parser.add_argument("--size", type=int, help="image side in px (default 256)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic pictures instead of scikit-image samples")
    parser.add_argument("--max-unet-batch", type=int, default=16)
    parser.add_argument("--model", help="an existing diffusers folder instead of the built random model")
    parser.add_argument("--model-dir", help="where the random model is cached (default .cache/bench-sd)")
    parser.add_argument("--unet-channels", type=_channels, default=(32, 64, 128))
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--cross-attention-dim", type=int, default=96)
    parser.add_argument("--vae-channels", type=_channels, default=(8, 16, 16, 16))
    parser.add_argument("--no-clip", dest="clip", action="store_false", help="skip the CLIP scoring costs")
    parser.add_argument("--clip-b32", action="store_true", help="also a random CLIP of ViT-B/32's size")
    parser.add_argument("--clip-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    options = parser.parse_args(argv)
    quick = options.quick
    options.steps = options.steps or (10 if quick else 50)
    options.maps = options.maps or (2 if quick else 10)
    options.counts = list(options.counts or ((1, 4) if quick else (1, 4, 8)))
    options.requests = options.requests or (1 if quick else 2)
    options.size = options.size or (64 if quick else 256)
    options.synthetic = options.synthetic or quick
    return options


def main(argv=None) -> dict:
    options = parse_args(argv)
    figures = run(options)
    print()
    print(report(figures))
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {options.json}")
    return figures


if __name__ == "__main__":
    main()
