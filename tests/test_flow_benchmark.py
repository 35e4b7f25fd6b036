"""`engine_benchmark.py --family sd3|flux`: the counted work per edit and the FLOPs from the real configs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_benchmark():
    spec = importlib.util.spec_from_file_location("engine_benchmark", ROOT / "benchmarks" / "engine_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def test_flux_work_per_edit_and_flops(engine_benchmark, tiny_flux_dir, capsys):
    from benchmarks.flow_costs import H100_BF16_FLOPS, samples_per_edit
    from diffedit_batch.config import load_config

    figures = engine_benchmark.main(["--family", "flux", "--model-dir", str(tiny_flux_dir)])
    settings = load_config(ROOT / "configs" / "flux-dev.yaml").edit
    alone = figures["scenarios"]["one_target"]["alone"]
    assert alone["unet_samples"] == sum(samples_per_edit(settings, classifier_free=False).values()) == 60
    shared = figures["scenarios"]["four_targets"]
    assert shared["one_call"]["unet_samples"] < shared["alone"]["unet_samples"]
    transformer = figures["components"]["transformer"]
    assert 11.8e9 < transformer["parameters"] < 12.0e9  # FLUX.1-dev's 12 B
    # per 1024 px sample: 2 x (image + text tokens) x per-token weights + attention, about 74 TFLOP
    assert 70e12 < transformer["flops"] < 80e12
    assert alone["h100_seconds_per_edit"] == pytest.approx(alone["flops_per_edit"] / H100_BF16_FLOPS)
    assert "four_candidates" in capsys.readouterr().out
