"""Engine benchmark: the batched DiffEditEngine against the deprecated diffusers pipeline run row by row.

Both run the same edits at equal settings on the same random Stable Diffusion (built once and cached), in two
scenarios: one target per image, and several targets per image (same picture, source prompt and seed). For each
side it prints edits/s, their ratio, and the work per edit counted with forward hooks on the models (UNet
sample-evaluations and calls, VAE encodes and decodes, text-encoder prompts), the seconds spent inside each
model, peak RSS, and the engine's seconds per stage. The outputs of both sides are compared as a sanity check.

    .venv/bin/python benchmarks/engine_benchmark.py            # defaults: 50 steps, 10 maps, 3 repeats
    .venv/bin/python benchmarks/engine_benchmark.py --quick    # 10 steps, 4 maps, 1 repeat
    .venv/bin/python benchmarks/engine_benchmark.py --json figures.json
    .venv/bin/python benchmarks/engine_benchmark.py --family flux   # SD3 / FLUX.1: work per edit and FLOPs

With `--family sd3|flux` (no deprecated reference exists for flow models) it counts the transformer samples per
edit of the engine with all rows in one call against the same edits one by one, on a tiny random model of that
family at the shipped config's edit settings (configs/sd35.yaml, configs/flux-dev.yaml), and turns them into FLOPs
per edit at 1024x1024 from the real models' configs built on the meta device (`flow_costs.py`), with the H100's
physical limit per edit.

Timings are wall-clock on whatever else the machine runs: the CPU used by other processes during each timed
run is measured (/proc/stat) and printed, so a contaminated run can be recognised and repeated.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffedit_batch import DiffEditEngine, EditSettings  # noqa: E402
from diffedit_batch.testing.reference import reference_edit, reference_pipeline  # noqa: E402
from diffedit_batch.testing.reference_sdxl import reference_sdxl_pipeline  # noqa: E402
from diffedit_batch.testing.pictures import synthetic_photo  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Speed-up the engine should reach on a 2-core CPU at equal settings, by targets per image.
TARGET_SPEEDUP = {1: 1.3, 4: 1.8}

# (scikit-image sample, source prompt, target prompts): several targets edit the same picture.
PICTURES = [
    ("astronaut", "a photo of a woman in a space suit",
     ["a photo of a man in a space suit", "a photo of a robot in a space suit",
      "a photo of a child in a space suit", "a photo of a statue in a space suit"]),
    ("coffee", "a cup of coffee on a table",
     ["a cup of tea on a table", "a bowl of soup on a table", "a glass of milk on a table",
      "a cup of cocoa on a table"]),
    ("chelsea", "a photo of a cat", ["a photo of a dog", "a photo of a tiger", "a photo of a fox", "a photo of a rabbit"]),
    ("rocket", "a rocket on a launch pad",
     ["a tower on a launch pad", "a lighthouse on a launch pad", "a tree on a launch pad", "a balloon on a launch pad"]),
]


# ---------------------------------------------------------------------------------------------- inputs


def sample_photo(name: str, size: int) -> PIL.Image.Image:
    """A scikit-image sample picture, centre-cropped to a square and resized to `size` px."""
    import skimage.data

    image = PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), PIL.Image.LANCZOS)


@dataclasses.dataclass(frozen=True)
class Edit:
    image: PIL.Image.Image
    source: str
    target: str
    seed: int


def scenario_edits(images: int, targets: int, size: int, synthetic: bool) -> list[Edit]:
    """`images` pictures x `targets` target prompts each; one seed per picture."""
    edits = []
    for i in range(images):
        name, source, target_prompts = PICTURES[i % len(PICTURES)]
        if synthetic or i >= len(PICTURES):
            picture = synthetic_photo(size, size, seed=i)
            source = f"{source} ({i})" if i >= len(PICTURES) else source
        else:
            picture = sample_photo(name, size)
        for t in range(targets):
            target = target_prompts[t % len(target_prompts)]
            if t >= len(target_prompts):
                target = f"{target}, version {t // len(target_prompts) + 1}"
            edits.append(Edit(picture, source, target, seed=1000 + i))
    return edits


# ---------------------------------------------------------------------------------------------- the two sides


def build_model(folder: Path, sizes: dict) -> Path:
    """Build the random model (SD, or SDXL with `sizes["family"]`) into `folder` unless it already holds one of the
    same sizes."""
    from diffedit_batch.testing.tiny_sd import build_tiny_stable_diffusion
    from diffedit_batch.testing.tiny_sdxl import build_tiny_sdxl

    stamp = folder / "benchmark_sizes.json"
    if (folder / "model_index.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == sizes:
        return folder
    print(f"building the benchmark model in {folder} ...", flush=True)
    if sizes.get("family") == "sdxl":  # SDXL's text widths are its own (two encoders, pooled projection)
        build_tiny_sdxl(folder, seed=sizes["seed"], unet_channels=tuple(sizes["unet_channels"]),
                        vae_channels=tuple(sizes["vae_channels"]))
        stamp.write_text(json.dumps(sizes))
        return folder
    build_tiny_stable_diffusion(
        folder,
        seed=sizes["seed"],
        unet_channels=tuple(sizes["unet_channels"]),
        layers_per_block=sizes["layers_per_block"],
        cross_attention_dim=sizes["cross_attention_dim"],
        vae_channels=tuple(sizes["vae_channels"]),
    )
    stamp.write_text(json.dumps(sizes))
    return folder


def run_reference(pipe, edits: list[Edit], settings: EditSettings):
    return [reference_edit(pipe, edit.image, edit.source, edit.target, edit.seed, settings) for edit in edits]


def run_engine(engine: DiffEditEngine, edits: list[Edit], settings: EditSettings, rows_per_call: int):
    outputs = []
    step = rows_per_call or len(edits)
    for start in range(0, len(edits), step):
        chunk = edits[start : start + step]
        results = engine.edit(
            [e.image for e in chunk], [e.source for e in chunk], [e.target for e in chunk], [e.seed for e in chunk],
            settings=settings,
        )
        outputs.extend((result.image, result.mask) for result in results)
    return outputs


# ---------------------------------------------------------------------------------------------- measuring


class ModuleMeter:
    """Forward hooks on one module: samples (batch rows of the first input), calls and seconds inside it."""

    def __init__(self, module):
        self.samples = self.calls = 0
        self.seconds = 0.0
        self._started = 0.0
        self._handles = [
            module.register_forward_pre_hook(self._before, with_kwargs=True),
            module.register_forward_hook(self._after),
        ]

    def _before(self, module, args, kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        self.samples += first.shape[0]
        self.calls += 1
        self._started = time.perf_counter()

    def _after(self, module, args, output):
        self.seconds += time.perf_counter() - self._started

    def remove(self):
        for handle in self._handles:
            handle.remove()


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used (Linux /proc/stat), or None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Polls this process's resident set size; `peak` in bytes (0 where /proc/self/statm is missing)."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, 0
        self._stop_event = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self):
        while not self._stop_event.is_set():
            try:
                resident = int(Path("/proc/self/statm").read_text().split()[1]) * self._page
            except OSError:
                return
            self.peak = max(self.peak, resident)
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


class OtherLoad:
    """While the block runs: its wall and own CPU seconds, and the cores' worth of CPU other processes used.

    Other processes' CPU is the machine's busy time (/proc/stat) minus this process's; None where unknown.
    Anything above ~0.1 core means the timing is contaminated.
    """

    def __enter__(self):
        self._busy, self._own = machine_busy_seconds(), sum(os.times()[:2])
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._started
        busy = machine_busy_seconds()
        self.cpu_seconds = sum(os.times()[:2]) - self._own
        self.cores = None if busy is None else max(0.0, (busy - self._busy - self.cpu_seconds) / self.seconds)


@contextmanager
def measured(engine: DiffEditEngine, figures: dict):
    """Time the block and fill `figures`: wall and own CPU seconds, other processes' load, model meters, RSS."""
    meters = {
        "unet": ModuleMeter(engine.unet),
        "vae_encoder": ModuleMeter(engine.vae.encoder),
        "vae_decoder": ModuleMeter(engine.vae.decoder),
        "text_encoder": ModuleMeter(engine.text_encoder),
    }
    rss = RssSampler()
    rss.start()
    try:
        with OtherLoad() as load:
            yield
    finally:
        rss.stop()
        for meter in meters.values():
            meter.remove()
    figures["seconds"] = load.seconds
    figures["cpu_seconds"] = load.cpu_seconds
    figures["other_load"] = load.cores
    figures["peak_rss_mib"] = rss.peak / 2**20 if rss.peak else None
    figures["models"] = {
        name: {"samples": m.samples, "calls": m.calls, "seconds": m.seconds} for name, m in meters.items()
    }


def per_edit(run: dict, edits: int) -> dict:
    """The figures of one side reported per edit (work) and as shares of its time."""
    models = run["models"]
    in_models = sum(m["seconds"] for m in models.values())
    return {
        "unet_samples": models["unet"]["samples"] / edits,
        "unet_calls": models["unet"]["calls"] / edits,
        "vae_encodes": models["vae_encoder"]["samples"] / edits,
        "vae_decodes": models["vae_decoder"]["samples"] / edits,
        "text_prompts": models["text_encoder"]["samples"] / edits,
        "seconds": run["seconds"] / edits,
        "seconds_in": {
            **{name: m["seconds"] / edits for name, m in models.items()},
            "outside_models": (run["seconds"] - in_models) / edits,
        },
    }


def output_difference(reference: list, engine: list) -> dict:
    """How far the engine's images and masks are from the reference's (pixel values 0..255)."""
    differences = [
        np.abs(np.asarray(r_image, np.float64) - np.asarray(e_image, np.float64))
        for (r_image, _), (e_image, _) in zip(reference, engine)
    ]
    agreement = [float((np.asarray(r_mask) == np.asarray(e_mask)).mean()) for (_, r_mask), (_, e_mask) in zip(reference, engine)]
    return {
        "max_abs": float(max(d.max() for d in differences)),
        "mean_abs": float(np.mean([d.mean() for d in differences])),
        "worst_row_mean_abs": float(max(d.mean() for d in differences)),
        "mask_agreement_min": min(agreement),
    }


def unit_costs(engine: DiffEditEngine, size: int, max_other_load: float, batches=(1, 2, 4, 8, 16, 32)) -> dict:
    """Milliseconds per UNet sample at several batch sizes, and per VAE encode / decode, at the benchmark size.

    Each figure is the best of up to 3 quiet timings (of 9 tries; the best of all where none was quiet).
    """
    latent = size // engine.vae_scale_factor
    channels = engine.unet.config.in_channels
    hidden = engine.text_encoder.config.hidden_size
    timestep = torch.tensor(500)
    worst_load = 0.0

    def best_ms(call, rows):
        nonlocal worst_load
        call()  # warm the shape
        quiet, noisy = [], []
        for _ in range(9):
            with OtherLoad() as load:
                call()
            (quiet if load.cores is None or load.cores <= max_other_load else noisy).append(load.seconds)
            if len(quiet) == 3:
                break
        if not quiet:
            worst_load = max(worst_load, load.cores)
        return 1000 * min(quiet or noisy) / rows

    costs: dict = {"unet_ms_per_sample": {}, "vae_encode_ms_per_image": {}}
    with torch.no_grad():
        for batch in batches:
            x = torch.randn(batch, channels, latent, latent)
            e = torch.randn(batch, engine.tokenizer.model_max_length, hidden)
            costs["unet_ms_per_sample"][batch] = best_ms(lambda: engine.unet(x, timestep, encoder_hidden_states=e), batch)
        for batch in (1, 10):  # one encode (the engine), a mask's ten copies in one call (the reference)
            pixels = torch.randn(batch, 3, size, size)
            costs["vae_encode_ms_per_image"][batch] = best_ms(lambda: engine.vae.encode(pixels), batch)
        z = torch.randn(1, engine.vae.config.latent_channels, latent, latent)
        costs["vae_decode_ms_per_image"] = best_ms(lambda: engine.vae.decode(z), 1)
    costs["contaminated"] = worst_load > 0
    return costs


def parameter_counts(engine: DiffEditEngine) -> dict:
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    counts = {"unet": count(engine.unet), "vae": count(engine.vae), "text_encoder": count(engine.text_encoder)}
    if engine.text_encoder_2 is not None:
        counts["text_encoder_2"] = count(engine.text_encoder_2)
    return counts


# ---------------------------------------------------------------------------------------------- the benchmark


def timed_run(side, edits, pipe, engine, settings, options) -> tuple[dict, list]:
    figures: dict = {}
    stages_before = dict(engine.stats.seconds)
    with measured(engine, figures):
        if side == "reference":
            result = run_reference(pipe, edits, settings)
        else:
            result = run_engine(engine, edits, settings, options.rows_per_call)
    if side == "engine":
        figures["stage_seconds"] = {
            stage: seconds - stages_before.get(stage, 0.0) for stage, seconds in engine.stats.seconds.items()
        }
    return figures, result


def run_scenario(name, edits, pipe, engine, settings, options) -> dict:
    """Time both sides on `edits` `options.repeats` times, alternating which goes first.

    A run during which other processes kept more than `options.max_other_load` cores busy is contaminated:
    it is run again, up to `options.retries` extra runs per side. The figures come from the quiet runs (from
    all runs, flagged `contaminated`, where none was quiet); the median run gives the per-model seconds.
    """
    runs = {"reference": [], "engine": []}
    extra = {"reference": 0, "engine": 0}
    outputs = {}
    for repeat in range(options.repeats):
        order = ("reference", "engine") if repeat % 2 == 0 else ("engine", "reference")
        for side in order:
            while True:
                figures, result = timed_run(side, edits, pipe, engine, settings, options)
                figures["quiet"] = figures["other_load"] is None or figures["other_load"] <= options.max_other_load
                runs[side].append(figures)
                outputs.setdefault(side, result)
                rerun = not figures["quiet"] and extra[side] < options.retries
                print(f"  {name}: {side} run {repeat + 1}/{options.repeats}: {figures['seconds']:.1f} s (other "
                      f"processes: {_load(figures['other_load'])} cores{', contaminated: again' if rerun else ''})",
                      flush=True)
                if not rerun:
                    break
                extra[side] += 1

    n = len(edits)
    sides = {}
    for side, all_runs in runs.items():
        quiet = [r for r in all_runs if r["quiet"]]
        used = quiet or all_runs
        median_run = sorted(used, key=lambda r: r["seconds"])[(len(used) - 1) // 2]
        seconds = [r["seconds"] for r in used]
        sides[side] = {
            "seconds": seconds,
            "seconds_median": statistics.median(seconds),
            "edits_per_s": n / statistics.median(seconds),
            "per_edit": per_edit(median_run, n),
            "cpu_seconds_per_edit": statistics.median(r["cpu_seconds"] for r in used) / n,
            "peak_rss_mib": max((r["peak_rss_mib"] or 0) for r in all_runs) or None,
            "other_load": [r["other_load"] for r in used],
            "runs": len(all_runs),
            "runs_used": len(used),
            "contaminated": not quiet,
        }
        if side == "engine":
            sides[side]["stage_seconds_per_edit"] = {
                stage: statistics.median(r["stage_seconds"][stage] for r in used) / n
                for stage in median_run["stage_seconds"]
            }
    targets = options.targets if name == "multi_target" else 1
    speedup = sides["reference"]["seconds_median"] / sides["engine"]["seconds_median"]
    return {
        "images": len({id(e.image) for e in edits}),
        "targets_per_image": targets,
        "edits": n,
        **sides,
        "speedup": speedup,
        "speedup_best": min(sides["reference"]["seconds"]) / min(sides["engine"]["seconds"]),
        "target_speedup": TARGET_SPEEDUP.get(targets) if options.default_settings else None,
        "output_difference": output_difference(outputs["reference"], outputs["engine"]),
    }


def run(options: argparse.Namespace) -> dict:
    if options.threads:
        torch.set_num_threads(options.threads)
    settings = EditSettings(
        num_inference_steps=options.steps,
        num_maps_per_mask=options.maps,
        inpaint_strength=options.inpaint_strength,
        guidance_scale=options.guidance_scale,
        invert_guidance_scale=options.invert_guidance_scale,
        mask_encode_strength=options.mask_encode_strength,
        mask_thresholding_ratio=options.mask_thresholding_ratio,
    )
    options.default_settings = settings == EditSettings()
    sizes = None
    if options.model:
        folder = Path(options.model)
    else:
        sizes = {
            "seed": 0,
            "unet_channels": list(options.unet_channels),
            "layers_per_block": options.layers_per_block,
            "cross_attention_dim": options.cross_attention_dim,
            "vae_channels": list(options.vae_channels),
        }
        if options.family == "sdxl":
            sizes["family"] = "sdxl"
        model_dir = options.model_dir or str(ROOT / ".cache" / ("bench-sdxl" if options.family == "sdxl" else "bench-sd"))
        folder = build_model(Path(model_dir), sizes)
    # No prompt cache across calls: each timed engine run encodes its prompts like the reference does.
    engine = DiffEditEngine.from_pretrained(
        str(folder), device="cpu", dtype=torch.float32, max_unet_batch=options.max_unet_batch, prompt_cache_size=0
    )
    # SDXL's reference: the deprecated DiffEdit loops with SDXL conditioning (testing/reference_sdxl.py).
    pipe = reference_sdxl_pipeline(engine) if engine.family_name == "sdxl" else reference_pipeline(engine)
    scenarios = {
        "one_target": scenario_edits(options.images, 1, options.size, options.synthetic),
        "multi_target": scenario_edits(options.multi_images, options.targets, options.size, options.synthetic),
    }
    warm = scenarios["one_target"][:1]
    scenarios = {name: edits for name, edits in scenarios.items() if name in options.scenarios}
    print("warming up (one edit each) ...", flush=True)
    run_reference(pipe, warm, settings)
    run_engine(engine, warm, settings, 0)

    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "torch": torch.__version__,
            "diffusers": _version("diffusers"),
            "transformers": _version("transformers"),
        },
        "model": {"folder": str(folder), "family": engine.family_name, "sizes": sizes, "image_px": options.size,
                  "parameters": parameter_counts(engine)},
        "settings": {**dataclasses.asdict(settings), "edit_steps": settings.edit_steps},
        "engine_options": {"max_unet_batch": options.max_unet_batch, "rows_per_call": options.rows_per_call or "all",
                           "prompt_cache_size": 0},
        "repeats": options.repeats,
        "scenarios": {},
    }
    for name, edits in scenarios.items():
        print(f"scenario {name}: {len(edits)} edits", flush=True)
        figures["scenarios"][name] = run_scenario(name, edits, pipe, engine, settings, options)
    if options.unit_costs:
        print("unit costs ...", flush=True)
        figures["unit_costs"] = unit_costs(engine, options.size, options.max_other_load)
    figures["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


# ---------------------------------------------------------------------------------------------- report


def _load(value):
    return "n/a" if value is None else f"{value:.2f}"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(figures: dict) -> str:
    """The figures as a readable text table."""
    m, model, s = figures["machine"], figures["model"], figures["settings"]
    params = model["parameters"]
    lines = [
        f"DiffEdit engine benchmark, {figures['date']}",
        f"machine: {m['processor']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads "
        f"({m['torch_interop_threads']} inter-op), diffusers {m['diffusers']}, transformers {m['transformers']}",
        f"model ({model['family']}): UNet {params['unet'] / 1e6:.2f}M, VAE {params['vae'] / 1e6:.2f}M, text encoder "
        f"{(params['text_encoder'] + params.get('text_encoder_2', 0)) / 1e6:.2f}M parameters; sizes {model['sizes'] or model['folder']}; "
        f"images {model['image_px']} px",
        f"settings: {s['num_inference_steps']} steps ({s['edit_steps']} inverted/edited), {s['num_maps_per_mask']} maps, "
        f"inpaint {s['inpaint_strength']}, guidance {s['guidance_scale']}, inversion guidance "
        f"{s['invert_guidance_scale']}, mask strength {s['mask_encode_strength']}; engine {figures['engine_options']}; "
        f"median of {figures['repeats']} run(s)",
    ]
    for name, sc in figures["scenarios"].items():
        ref, eng = sc["reference"], sc["engine"]
        target = f" (target >= {sc['target_speedup']}x)" if sc["target_speedup"] else ""
        lines += [
            "",
            f"== {name}: {sc['images']} images x {sc['targets_per_image']} target(s) = {sc['edits']} edits ==",
            f"{'':36}{'reference':>12}{'engine':>12}",
        ]
        rows = [
            ("edits/s", ref["edits_per_s"], eng["edits_per_s"], "{:.3f}"),
            ("seconds per edit", ref["seconds_median"] / sc["edits"], eng["seconds_median"] / sc["edits"], "{:.2f}"),
            ("CPU seconds per edit (this process)", ref["cpu_seconds_per_edit"], eng["cpu_seconds_per_edit"], "{:.2f}"),
            ("UNet samples per edit", ref["per_edit"]["unet_samples"], eng["per_edit"]["unet_samples"], "{:.1f}"),
            ("UNet calls per edit", ref["per_edit"]["unet_calls"], eng["per_edit"]["unet_calls"], "{:.1f}"),
            ("VAE encodes per edit", ref["per_edit"]["vae_encodes"], eng["per_edit"]["vae_encodes"], "{:.2f}"),
            ("VAE decodes per edit", ref["per_edit"]["vae_decodes"], eng["per_edit"]["vae_decodes"], "{:.2f}"),
            ("text-encoder prompts per edit", ref["per_edit"]["text_prompts"], eng["per_edit"]["text_prompts"], "{:.2f}"),
        ]
        for module in ("unet", "vae_encoder", "vae_decoder", "text_encoder", "outside_models"):
            rows.append((f"s/edit in {module}", ref["per_edit"]["seconds_in"][module],
                         eng["per_edit"]["seconds_in"][module], "{:.3f}"))
        rows += [
            ("peak RSS (MiB)", ref["peak_rss_mib"] or float("nan"), eng["peak_rss_mib"] or float("nan"), "{:.0f}"),
        ]
        for label, a, b, fmt in rows:
            lines.append(f"{label:36}{fmt.format(a):>12}{fmt.format(b):>12}")
        worst = lambda side: _load(max((v for v in side["other_load"] if v is not None), default=None))  # noqa: E731
        lines.append(f"{'others busy, worst used run (cores)':36}{worst(ref):>12}{worst(eng):>12}")
        runs = lambda side: f"{side['runs_used']}/{side['runs']}" + (" !" if side["contaminated"] else "")  # noqa: E731
        lines.append(f"{'runs used / made (! = none quiet)':36}{runs(ref):>12}{runs(eng):>12}")
        lines.append(f"speed-up (engine / reference, median runs): {sc['speedup']:.2f}x{target}; best runs "
                     f"{sc['speedup_best']:.2f}x")
        stages = ", ".join(f"{k} {v:.3f}" for k, v in eng["stage_seconds_per_edit"].items())
        lines.append(f"engine seconds per edit by stage: {stages}")
        d = sc["output_difference"]
        lines.append(f"engine vs reference outputs: max abs {d['max_abs']:.0f}/255, mean abs {d['mean_abs']:.3f}/255 "
                     f"(worst row {d['worst_row_mean_abs']:.3f}), mask agreement >= {d['mask_agreement_min']:.4f}")
    if "unit_costs" in figures:
        u = figures["unit_costs"]
        unet = ", ".join(f"batch {b}: {ms:.1f}" for b, ms in u["unet_ms_per_sample"].items())
        enc = ", ".join(f"batch {b}: {ms:.1f}" for b, ms in u["vae_encode_ms_per_image"].items())
        lines += ["", f"unit costs: UNet ms/sample {unet}", f"            VAE encode ms/image {enc}; "
                  f"VAE decode {u['vae_decode_ms_per_image']:.1f} ms/image"
                  + (" (some timed while other processes were busy)" if u["contaminated"] else "")]
    lines.append(f"process peak RSS: {figures['process_peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def _channels(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv=None) -> argparse.Namespace:
    defaults = EditSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorthand for --steps 10 --maps 4 --repeats 1")
    parser.add_argument("--steps", type=int, help=f"num_inference_steps (default {defaults.num_inference_steps})")
    parser.add_argument("--maps", type=int, help=f"num_maps_per_mask (default {defaults.num_maps_per_mask})")
    parser.add_argument("--inpaint-strength", type=float, default=defaults.inpaint_strength)
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--invert-guidance-scale", type=float, default=defaults.invert_guidance_scale)
    parser.add_argument("--mask-encode-strength", type=float, default=defaults.mask_encode_strength)
    parser.add_argument("--mask-thresholding-ratio", type=float, default=defaults.mask_thresholding_ratio)
    parser.add_argument("--repeats", type=int, help="timed runs per side and scenario, alternating order (default 3)")
    parser.add_argument("--images", type=int, default=4, help="pictures of the one-target scenario")
    parser.add_argument("--multi-images", type=int, default=2, help="pictures of the multi-target scenario")
    parser.add_argument("--targets", type=int, default=4, help="target prompts per picture in the multi-target scenario")
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=["one_target", "multi_target"],
                        help="comma-separated: one_target, multi_target (default both)")
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--synthetic", action="store_true", help="synthetic pictures instead of scikit-image samples")
    parser.add_argument("--max-unet-batch", type=int, default=16, help="engine: most UNet samples per call")
    parser.add_argument("--rows-per-call", type=int, default=0, help="engine: rows per edit() call (0: all)")
    parser.add_argument("--model", help="an existing diffusers folder to benchmark instead of the built random model")
    parser.add_argument("--model-dir", default=None,
                        help="where the random model is cached (default .cache/bench-sd, or .cache/bench-sdxl)")
    parser.add_argument("--family", choices=["sd", "sdxl", "sd3", "flux"], default="sd",
                        help="the random model's family: SD 2.1's layout, or SDXL's (two text encoders, pooled "
                        "embeddings, time ids), whose work per edit is then reported against the SDXL reference; "
                        "sd3 / flux: the flow families' work per edit and FLOPs (see the module docstring)")
    parser.add_argument("--unet-channels", type=_channels, default=(32, 64, 128))
    parser.add_argument("--layers-per-block", type=int, default=1)
    parser.add_argument("--cross-attention-dim", type=int, default=96)
    parser.add_argument("--vae-channels", type=_channels, default=(8, 16, 16, 16))
    parser.add_argument("--no-unit-costs", dest="unit_costs", action="store_false",
                        help="skip the per-sample UNet / VAE micro-benchmark")
    parser.add_argument("--max-other-load", type=float, default=0.25,
                        help="rerun a timed run if other processes kept more cores than this busy meanwhile")
    parser.add_argument("--retries", type=int, default=3,
                        help="extra runs per side and scenario to replace contaminated ones")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    parser.add_argument("--json", help="write the figures to this JSON file")
    options = parser.parse_args(argv)
    unknown = set(options.scenarios) - {"one_target", "multi_target"}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    quick = options.quick
    options.steps = options.steps or (10 if quick else defaults.num_inference_steps)
    options.maps = options.maps or (4 if quick else defaults.num_maps_per_mask)
    options.repeats = options.repeats or (1 if quick else 3)
    return options


def run_flow(options: argparse.Namespace) -> dict:
    """Transformer samples per edit, all rows in one call vs each row alone, on a tiny model of `options.family` at
    the shipped config's settings; FLOPs per edit at 1024 px from the real configs; the H100 limit."""
    from benchmarks.flow_costs import H100_BF16_FLOPS, component_costs
    from diffedit_batch.config import load_config
    from diffedit_batch.testing.tiny_flux import build_tiny_flux
    from diffedit_batch.testing.tiny_sd3 import build_tiny_sd3

    config_name = "sd35.yaml" if options.family == "sd3" else "flux-dev.yaml"
    settings = load_config(ROOT / "configs" / config_name).edit
    folder = Path(options.model_dir or ROOT / ".cache" / f"bench-{options.family}")
    if not (folder / "model_index.json").exists():
        (build_tiny_sd3 if options.family == "sd3" else build_tiny_flux)(folder)
    engine = DiffEditEngine.from_pretrained(str(folder), device="cpu", dtype=torch.float32, max_unet_batch=64,
                                            prompt_cache_size=0)
    candidates = [settings, settings.replace(inpaint_strength=0.6, mask_thresholding_ratio=2.0),
                  settings.replace(inpaint_strength=0.7, mask_thresholding_ratio=4.0),
                  settings.replace(mask_thresholding_ratio=2.5)]
    size = 64
    scenarios = {
        "one_target": [(e, settings) for e in scenario_edits(4, 1, size, True)],
        "four_targets": [(e, settings) for e in scenario_edits(2, 4, size, True)],
        "four_candidates": [(e, each) for e in scenario_edits(1, 1, size, True) for each in candidates],
    }
    costs = component_costs(options.family)
    per_prompt = sum(c["flops"] for name, c in costs.items() if name.startswith("text_encoder"))
    vae = costs["vae"]
    figures = {"family": options.family, "config": config_name,
               "settings": {**dataclasses.asdict(settings), "edit_steps": settings.edit_steps},
               "components": costs, "scenarios": {}}
    for name, rows in scenarios.items():
        counted = {}
        for side in ("alone", "one_call"):
            before = engine.stats.counters()
            calls = [[row] for row in rows] if side == "alone" else [rows]
            for call in calls:
                engine.edit([edit.image for edit, _ in call], [edit.source for edit, _ in call],
                            [edit.target for edit, _ in call], [edit.seed for edit, _ in call],
                            [each for _, each in call])
            after = engine.stats.counters()
            counted[side] = {key: (after[key] - before[key]) / len(rows)
                             for key in ("unet_samples", "unet_calls", "vae_encodes", "vae_decodes", "text_encodes")}
            work = counted[side]
            flops = (work["unet_samples"] * costs["transformer"]["flops"] + work["text_encodes"] * per_prompt
                     + work["vae_encodes"] * vae["flops"] + work["vae_decodes"] * vae["decode_flops"])
            counted[side]["flops_per_edit"] = flops
            counted[side]["h100_seconds_per_edit"] = flops / H100_BF16_FLOPS
        figures["scenarios"][name] = counted
    return figures


def report_flow(figures: dict) -> str:
    lines = [f"{figures['family']} at {figures['config']}'s settings (steps {figures['settings']['num_inference_steps']}, "
             f"{figures['settings']['edit_steps']} inverted and edited, {figures['settings']['num_maps_per_mask']} maps)",
             "component            params (B)  bf16 GiB  TFLOP per call at 1024 px"]
    for name, c in figures["components"].items():
        lines.append(f"{name:24s} {c['parameters'] / 1e9:7.3f} {c['weights_gib']:8.2f} {c['flops'] / 1e12:10.2f}")
    lines.append("scenario          side      samples/edit  calls/edit  PFLOP/edit  H100 s/edit")
    for name, sides in figures["scenarios"].items():
        for side, work in sides.items():
            lines.append(f"{name:17s} {side:9s} {work['unet_samples']:12.1f} {work['unet_calls']:11.1f} "
                         f"{work['flops_per_edit'] / 1e15:11.3f} {work['h100_seconds_per_edit']:12.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    options = parse_args(argv)
    if options.family in ("sd3", "flux"):
        figures = run_flow(options)
        print(report_flow(figures))
        if options.json:
            Path(options.json).write_text(json.dumps(figures, indent=2))
        return figures
    figures = run(options)
    print()
    print(report(figures))
    if options.json:
        Path(options.json).write_text(json.dumps(figures, indent=2))
        print(f"figures written to {options.json}")
    return figures


if __name__ == "__main__":
    main()
