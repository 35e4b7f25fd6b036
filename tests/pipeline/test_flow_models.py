"""SD 3/3.5 and FLUX.1 at the job's door: the shipped configs pass the preflight on a folder of the real layout
(tiny weights), the family is resolved, partial folders name what they lack, other transformer pipelines are
refused by name, the config keys of the flow families are checked, and `make-tiny-model` builds both families."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diffedit_batch.config import ConfigError, config_from_dict, load_config
from diffedit_batch.data.images import flow_buckets, parse_buckets
from diffedit_batch.pipeline import preflight
from diffedit_batch.pipeline.preflight import HubModel, PreflightError, check_models

ROOT = Path(__file__).resolve().parents[2]


def no_hub(repo_id, revision):
    raise AssertionError(f"the hub was asked about {repo_id}")


def shipped(name: str, folder: Path):
    """A shipped config unchanged but for model.pretrained."""
    return load_config(ROOT / "configs" / name, [f"model.pretrained={folder}"])


def error_of(config, **flags) -> str:
    with pytest.raises(PreflightError) as raised:
        check_models(config, **flags)
    return str(raised.value)


@pytest.mark.parametrize("name, fixture, family", [("sd35.yaml", "tiny_sd3_dir", "sd3"),
                                                   ("flux-dev.yaml", "tiny_flux_dir", "flux")])
def test_the_shipped_flow_configs_pass_the_preflight_on_a_folder_of_the_real_layout(request, name, fixture, family):
    config = shipped(name, request.getfixturevalue(fixture))
    check_models(config, hub_lookup=no_hub)
    assert preflight.resolve_model_family(config).model.family == family
    raw = load_config(ROOT / "configs" / name)
    assert raw.model.pretrained in ("stabilityai/stable-diffusion-3.5-medium", "black-forest-labs/FLUX.1-dev")
    assert raw.model.dtype == "bfloat16" and raw.model.aspect_buckets == "auto" and raw.model.resolution == 1024
    assert raw.edit.invert_guidance_scale == 1.0 and raw.edit.num_inference_steps == 28


def test_the_schnell_layout_passes_too(tiny_flux_schnell_dir):
    config = config_from_dict({"model": {"pretrained": str(tiny_flux_schnell_dir)}})
    check_models(config, hub_lookup=no_hub)
    assert preflight.resolve_model_family(config).model.family == "flux"


@pytest.mark.parametrize("component", ["text_encoder_3", "tokenizer_3"])
def test_a_partial_sd3_folder_names_the_missing_component(tiny_sd3_dir, tmp_path, component):
    folder = Path(shutil.copytree(tiny_sd3_dir, tmp_path / "sd3"))
    index = json.loads((folder / "model_index.json").read_text())
    del index[component]
    (folder / "model_index.json").write_text(json.dumps(index))
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert f"also needs {component}" in message and "StableDiffusion3Pipeline" in message


def test_a_missing_weights_file_of_a_flow_folder_is_named(tiny_flux_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_flux_dir, tmp_path / "flux"))
    (folder / "text_encoder_2" / "model.safetensors").unlink()
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert "not a complete diffusers FLUX.1 folder: no text_encoder_2/model.safetensors" in message


@pytest.mark.parametrize("pipeline, said", [
    ("FluxFillPipeline", "FLUX.1 Fill"), ("FluxKontextPipeline", "FLUX.1 Kontext"), ("Flux2Pipeline", "FLUX.2"),
    ("QwenImagePipeline", "Qwen-Image"), ("StableDiffusion3ControlNetPipeline", "SD3 ControlNet"),
])
def test_other_transformer_pipelines_are_refused_by_name(tiny_flux_dir, tmp_path, pipeline, said):
    folder = Path(shutil.copytree(tiny_flux_dir, tmp_path / "other"))
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = pipeline
    (folder / "model_index.json").write_text(json.dumps(index))
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert f"is a {pipeline} with components" in message and said in message
    assert "FLUX.1-dev/-schnell" in message  # what it does edit
    with pytest.raises(PreflightError, match=said):
        preflight.resolve_model_family(config_from_dict({"model": {"pretrained": str(folder)}}))


def _set_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("fixture, channels", [("tiny_flux_dir", 384), ("tiny_sd3_dir", 33)])
def test_a_flow_transformer_that_takes_more_than_its_latents_is_refused_before_the_run(request, tmp_path, fixture,
                                                                                       channels):
    """A FLUX.1 Fill/Canny/Depth transformer saved as a FluxPipeline: the preflight says so, not the edit actor."""
    folder = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "model"))
    _set_json(folder / "transformer" / "config.json", in_channels=channels)
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{folder}' has a ") and f"with {channels} input channels" in message


def test_a_separate_vae_of_other_latent_channels_names_model_vae_on_flow_models(tiny_flux_dir, tiny_sd3_dir,
                                                                               tmp_path):
    vae = Path(shutil.copytree(tiny_flux_dir / "vae", tmp_path / "vae"))
    for model in (tiny_flux_dir, tiny_sd3_dir):  # FLUX.1 takes 4 channels per latent channel (2x2 packing)
        check_models(config_from_dict({"model": {"pretrained": str(model), "vae": str(vae)}}), hub_lookup=no_hub)
    _set_json(vae / "config.json", latent_channels=4)  # an SD 1.x/2.x or SDXL VAE
    for model, takes in ((tiny_flux_dir, 16), (tiny_sd3_dir, 16)):
        message = error_of(config_from_dict({"model": {"pretrained": str(model), "vae": str(vae)}}),
                           hub_lookup=no_hub)
        assert message.startswith(f"model.vae: '{vae}' has 4 latent channels but the transformer of "
                                  f"model.pretrained: '{model}' takes {takes}")


@pytest.mark.parametrize("fixture", ["tiny_sd3_dir", "tiny_flux_dir"])
def test_a_flow_folder_without_its_clip_encoder_is_not_called_an_sdxl_refiner(request, tmp_path, fixture):
    """The SDXL refiner check (text_encoder_2 without text_encoder) must not read SD3's and FLUX.1's second encoder."""
    folder = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "model"))
    _set_json(folder / "model_index.json", text_encoder=[None, None])
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert "refiner" not in message and "lists text_encoder: [null, null]" in message
    index = json.loads((folder / "model_index.json").read_text())
    del index["text_encoder"]
    (folder / "model_index.json").write_text(json.dumps(index))
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert "refiner" not in message and "also needs text_encoder" in message


@pytest.mark.parametrize("fixture", ["tiny_sd3_dir", "tiny_flux_dir"])
def test_the_model_checks_of_sd_folders_hold_on_flow_folders_too(request, tmp_path, fixture):
    """model.revision on a local folder, and a component listed as [null, null], as on SD and SDXL folders."""
    tiny = request.getfixturevalue(fixture)
    assert error_of(config_from_dict({"model": {"pretrained": str(tiny), "revision": "v2"}}), hub_lookup=no_hub) == (
        f"model.revision: 'v2' is set but model.pretrained '{tiny}' is a local folder, which has no revisions; "
        "remove model.revision, or set model.pretrained to a Hugging Face hub id")
    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    _set_json(folder / "model_index.json", text_encoder_2=[None, None], image_encoder=[None, None])
    message = error_of(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{folder}' has a model_index.json that lists text_encoder_2: "
                              "[null, null]") and "image_encoder" not in message


def test_a_flow_hub_id_is_checked_against_its_own_layout(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    files = {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
             "tokenizer_2/tokenizer_config.json"}
    for folder, stem in (("transformer", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                         ("text_encoder", "model"), ("text_encoder_2", "model")):
        files |= {f"{folder}/config.json", f"{folder}/{stem}.safetensors"}
    config = config_from_dict({"model": {"pretrained": "org/flux-like"}})
    check_models(config, hub_lookup=lambda repo, revision: HubModel(files=frozenset(files)))
    lacking = frozenset(files - {"text_encoder_2/model.safetensors"})
    message = error_of(config, hub_lookup=lambda repo, revision: HubModel(files=lacking))
    assert "not a diffusers FLUX.1 model: no text_encoder_2/model.safetensors" in message


def test_flow_config_keys_are_checked_at_the_door():
    config = config_from_dict({"model": {"family": "flux", "max_sequence_length": 128, "text_encoder_device": "cpu"}})
    assert (config.model.family, config.model.max_sequence_length, config.model.text_encoder_device) == (
        "flux", 128, "cpu")
    assert config_from_dict({"model": {"family": "sd3"}}).model.family == "sd3"
    for model, message in (({"max_sequence_length": 513}, "at most 512"),
                           ({"text_encoder_device": "gpu"}, "text_encoder_device"),
                           ({"family": "flux2"}, "family")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": model})


def test_auto_buckets_on_flow_families_are_multiples_of_16_around_a_megapixel():
    shapes = parse_buckets("auto", 1024, "flux")
    assert shapes == flow_buckets(1024) == parse_buckets("auto", 1024, "sd3")
    assert (1024, 1024) in shapes
    for width, height in shapes:
        assert width % 16 == 0 and height % 16 == 0
        assert 0.9 <= width * height / 1024**2 <= 1.1 and max(width, height) <= 4 * min(width, height)
    with pytest.raises(ValueError, match="multiples of 16"):
        parse_buckets("1000x1000", 1024, "sd3")
    assert parse_buckets("1000x1000", 1024, "sdxl") == ((1000, 1000),)


@pytest.mark.parametrize("family, name", [("sd3", "sd3"), ("flux", "flux"), ("flux-schnell", "flux")])
def test_make_tiny_model_builds_each_flow_family(tmp_path, capsys, family, name):
    from diffedit_batch.cli import main
    from diffedit_batch.engine.model_index import family_of

    folder = tmp_path / f"tiny-{family}"
    assert main(["make-tiny-model", str(folder), "--family", family]) == 0
    assert family_of(json.loads((folder / "model_index.json").read_text())) == name
    assert str(folder) in capsys.readouterr().out
    check_models(config_from_dict({"model": {"pretrained": str(folder)}}), hub_lookup=no_hub)
    guidance = json.loads((folder / "transformer" / "config.json").read_text()).get("guidance_embeds")
    assert guidance is (None if family == "sd3" else family == "flux")


def test_bucket_shapes_that_a_flow_model_cannot_take_stop_the_run_before_it_starts(tiny_flux_dir):
    config = config_from_dict({"model": {"pretrained": str(tiny_flux_dir), "aspect_buckets": "1000x1000"}})
    with pytest.raises(PreflightError, match="model.aspect_buckets shape '1000x1000' must have positive sides that are "
                                             "multiples of 16"):
        preflight.resolve_model_family(config)


def test_the_text_encoder_device_is_checked_with_the_others(monkeypatch):
    monkeypatch.setattr(preflight, "_cuda_devices", lambda: (True, 1))
    config = config_from_dict({"model": {"device": "cuda", "text_encoder_device": "cuda:1"}})
    with pytest.raises(PreflightError, match="model.text_encoder_device: 'cuda:1', but this machine has 1 CUDA"):
        preflight.check_devices(config, local=True)
    preflight.check_devices(config_from_dict({"model": {"device": "cuda", "text_encoder_device": "cpu"}}), local=True)


def test_text_encoders_load_on_their_own_device(tiny_flux_dir):
    import torch

    from diffedit_batch.engine.loading import load_components

    components, options = load_components(str(tiny_flux_dir), device="cpu", dtype="auto", text_encoder_device="cpu",
                                          max_sequence_length=64)
    assert components["transformer"].dtype == torch.float32  # auto on the CPU (bfloat16 on CUDA)
    assert components["text_encoder_2"].device.type == "cpu" and options["max_sequence_length"] == 64
    assert "unet" not in components and type(components["scheduler"]).__name__ == "FlowMatchEulerDiscreteScheduler"
