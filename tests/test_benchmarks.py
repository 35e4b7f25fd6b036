"""The engine benchmark on a miniature setting: its figures have the expected structure and work counts.

Timings are not asserted (they depend on the machine); the counts are exact, because both sides' work is
counted with forward hooks on the same modules.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "engine_benchmark.py"


@pytest.fixture(scope="module")
def engine_benchmark():
    spec = importlib.util.spec_from_file_location("engine_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_miniature_benchmark_counts_less_work_for_the_engine(engine_benchmark, tiny_model_dir, tmp_path, capsys):
    steps, maps = 4, 2
    output = tmp_path / "figures.json"
    threads = torch.get_num_threads()
    try:
        # One thread: on a busy 2-core machine, two threads of tiny ops mostly wait for each other.
        figures = engine_benchmark.main([
            "--model", str(tiny_model_dir), "--synthetic", "--size", "32", "--steps", str(steps), "--maps", str(maps),
            "--images", "2", "--multi-images", "1", "--targets", "2", "--repeats", "1", "--no-unit-costs",
            "--threads", "1", "--retries", "0", "--json", str(output),
        ])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out

    assert json.loads(output.read_text()) == json.loads(json.dumps(figures))
    assert set(figures) >= {"date", "machine", "model", "settings", "scenarios", "process_peak_rss_mib"}
    assert figures["settings"]["num_inference_steps"] == steps and figures["settings"]["num_maps_per_mask"] == maps
    assert set(figures["model"]["parameters"]) == {"unet", "vae", "text_encoder"}
    assert set(figures["scenarios"]) == {"one_target", "multi_target"}
    edit_steps = int(steps * 0.8)
    # The reference per edit: a guided mask (4 x maps), guided inversion and edit (2 x steps each).
    reference_unet = 4 * maps + 2 * edit_steps + 2 * edit_steps
    expected_engine_unet = {
        # two pictures: unguided mask (2 x maps), inversion and edit as the reference
        "one_target": 2 * maps + 2 * edit_steps + 2 * edit_steps,
        # one picture, two targets: mask of source + 2 targets, one inversion, two edits; per edit
        "multi_target": (3 * maps + 2 * edit_steps + 2 * 2 * edit_steps) / 2,
    }
    expected_engine_vae_encodes = {"one_target": 1.0, "multi_target": 0.5}
    # distinct prompts (sources, targets, the empty one) per edit
    expected_engine_prompts = {"one_target": (2 + 2 + 1) / 2, "multi_target": (1 + 2 + 1) / 2}
    for name, scenario in figures["scenarios"].items():
        assert scenario["edits"] == 2
        reference, engine = scenario["reference"]["per_edit"], scenario["engine"]["per_edit"]
        assert reference["unet_samples"] == reference_unet
        assert engine["unet_samples"] == expected_engine_unet[name] < reference["unet_samples"]
        assert reference["vae_encodes"] == maps + 1  # the mask encodes `maps` copies, the inversion one more
        assert engine["vae_encodes"] == expected_engine_vae_encodes[name]
        assert reference["vae_decodes"] == engine["vae_decodes"] == 1
        assert reference["text_prompts"] == 8  # mask 2 x 2, inversion 2, edit 2
        assert engine["text_prompts"] == expected_engine_prompts[name]
        assert scenario["engine"]["edits_per_s"] > 0 and scenario["reference"]["edits_per_s"] > 0
        assert set(scenario["engine"]["stage_seconds_per_edit"]) >= {"mask", "invert", "edit", "vae_encode", "vae_decode"}
        assert scenario["target_speedup"] is None  # not the default settings: no target applies
        difference = scenario["output_difference"]
        assert difference["mean_abs"] <= 1.0 and difference["mask_agreement_min"] >= 0.99
        assert f"== {name}:" in printed
    for label in ("edits/s", "UNet samples per edit", "VAE encodes per edit", "text-encoder prompts per edit",
                  "peak RSS (MiB)", "speed-up", "engine seconds per edit by stage", "max abs"):
        assert label in printed
    assert "torch" in printed and "threads" in printed


def test_benchmark_model_is_built_at_the_asked_sizes_and_reused(engine_benchmark, tmp_path):
    sizes = {"seed": 0, "unet_channels": [16, 32, 48], "layers_per_block": 1, "cross_attention_dim": 16,
             "vae_channels": [8, 8, 16, 16]}
    folder = engine_benchmark.build_model(tmp_path / "bench-sd", sizes)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    text = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert unet["block_out_channels"] == [16, 32, 48] and unet["cross_attention_dim"] == 16
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert text["hidden_size"] == 16
    assert vae["block_out_channels"] == [8, 8, 16, 16]  # four blocks: 8x downsampling
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    built = weights.stat().st_mtime_ns
    assert engine_benchmark.build_model(folder, sizes) == folder
    assert weights.stat().st_mtime_ns == built  # same sizes: reused, not rebuilt


def test_miniature_candidates_benchmark_counts_the_unet_work_a_requests_candidates_share(tiny_model_dir, tmp_path,
                                                                                         capsys):
    """Candidates of one request share the mask's predictions and one inversion (to the longest strength); with
    the seed varied each candidate has its own, as an independent edit does."""
    from diffedit_batch.recipe.candidates import draw_candidates

    path = BENCHMARK.with_name("candidates_benchmark.py")
    spec = importlib.util.spec_from_file_location("candidates_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    threads = torch.get_num_threads()
    steps, maps, counts = 10, 2, (1, 4)
    try:
        spec.loader.exec_module(module)
        figures = module.main(["--quick", "--model", str(tiny_model_dir), "--steps", str(steps), "--maps", str(maps),
                               "--size", "32", "--counts", ",".join(map(str, counts)), "--no-clip", "--threads", "1",
                               "--json", str(tmp_path / "figures.json")])
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop(spec.name, None)
    printed = capsys.readouterr().out
    assert json.loads((tmp_path / "figures.json").read_text()) == json.loads(json.dumps(figures))

    base = module.EditSettings(num_inference_steps=steps, num_maps_per_mask=maps)
    cases = {(case["count"], case["vary_seed"]): case for case in figures["cases"]}
    assert set(cases) == {(1, False), (4, False), (4, True)}
    for (count, vary_seed), case in cases.items():
        vary = {**module.VARY, "seed": True} if vary_seed else module.VARY
        candidates = draw_candidates(base, vary, count, seed=1000)  # the one request's seed
        edit_steps = [c.settings.edit_steps for c in candidates]
        assert count == 1 or len(set(edit_steps)) > 1  # strengths drawn in [0.5, 0.8]: the longest one matters
        if vary_seed:  # every candidate its own mask and inversion: nothing shared
            expected = sum(2 * maps + 2 * k + 2 * k for k in edit_steps)
        else:  # mask once, inversion once to the longest edit, each candidate's edit
            expected = 2 * maps + 2 * max(edit_steps) + sum(2 * k for k in edit_steps)
        assert case["unet_samples_per_candidate"] == expected / count
        assert case["expected_unet_samples_per_candidate"] == expected / count
        assert case["independent_unet_samples_per_candidate"] == sum(2 * maps + 4 * k for k in edit_steps) / count
        assert case["candidates_per_s"] > 0
    assert cases[(4, False)]["unet_samples_per_candidate"] < cases[(4, True)]["unet_samples_per_candidate"]
    assert "UNet/cand" in printed and "<= 110" not in printed  # the target is for default steps only


@pytest.mark.slow
def test_miniature_scale_benchmark_removes_every_other_record_both_ways(tmp_path):
    """`scale_benchmark.py --supersede`: the end-of-run compaction after half the done rows were edited again, with
    the keys in one process and with the run's Ray Data pass; both remove the same records and merge the rest."""
    path = BENCHMARK.with_name("scale_benchmark.py")
    spec = importlib.util.spec_from_file_location("scale_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert module.main(["--rows", "--supersede", "3000", "--records-per-file", "100",
                            "--json", str(tmp_path / "figures.json")]) == 0
    finally:
        sys.modules.pop(spec.name, None)
    figures = json.loads((tmp_path / "figures.json").read_text())["figures"]
    assert [figure["kind"] for figure in figures] == ["supersede-local", "supersede-distributed"]
    for figure in figures:
        # 30 files of 100 records, half of each superseded: all 30 rewritten, then merged in pairs
        assert (figure["superseded"], figure["rewritten"], figure["files_after"]) == (1500, 30, 15)
        assert figure["driver_rss_mib"] > 0 and figure["peak_uss_mib"] > 0
