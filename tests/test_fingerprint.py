"""Settings fingerprints: what changes pixels counts, what only changes how or where the job runs does not."""

from __future__ import annotations

import dataclasses
import json

from diffedit_batch.config import Config, EditSettings, ModelConfig
from diffedit_batch.config.fingerprint import OPERATIONAL, UNSET_UNCOUNTED, model_family, pixel_settings, run_settings
from diffedit_batch.data.fingerprints import settings_differences, settings_fingerprint


def changed(config: Config, section: str, **values) -> Config:
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})


def base_print(config: Config) -> str:
    return run_settings(config).by_use[0]


def test_what_changes_pixels_changes_the_fingerprint_and_nothing_else_does():
    config = Config(model=ModelConfig(pretrained="/nowhere/sd"))
    before = base_print(config)
    for section, values in [("edit", {"guidance_scale": 5.0}), ("edit", {"num_inference_steps": 20}),
                            ("model", {"pretrained": "/nowhere/other"}), ("model", {"revision": "v2"}),
                            ("model", {"dtype": "float16"}), ("model", {"resolution": 512}),
                            ("model", {"aspect_buckets": "auto"}), ("model", {"vae_tiling": True}),
                            ("job", {"mode": "noop"})]:
        assert base_print(changed(config, section, **values)) != before, (section, values)
    for section, values in [("model", {"device": "cpu"}), ("model", {"max_unet_batch": 4}),
                            ("model", {"compile_unet": True}), ("model", {"channels_last": False}),
                            ("model", {"vae_slicing": True}), ("job", {"num_actors": 3, "batch_size": 2}),
                            ("job", {"seed": 5}),  # reaches an edit through its request's seed instead
                            ("output", {"format": "webdataset", "image_format": "jpg"}),
                            ("storage", {"write_retries": 1}), ("metrics", {"background": False}),
                            ("concepts", {"num_captions": 3}), ("captions", {"max_new_tokens": 5})]:
        assert base_print(changed(config, section, **values)) == before, (section, values)
    # YAML's 7 and 7.0 are one guidance scale
    assert base_print(changed(config, "edit", guidance_scale=7)) == base_print(changed(config, "edit", guidance_scale=7.0))


def test_every_model_and_edit_key_counts_unless_named_operational():
    """The rule is an exclude-list: a key added to `model` or `edit` later (a separate VAE, say) counts."""
    settings = pixel_settings(Config())
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(settings["model"]) == model_keys - OPERATIONAL["model"] - set(UNSET_UNCOUNTED)
    # keys added after fingerprints existed count once set, so older runs keep their fingerprints while null
    for key in UNSET_UNCOUNTED:
        assert key in pixel_settings(changed(Config(), "model", **{key: 128}))["model"]
    assert {"pretrained", "revision", "dtype", "resolution", "aspect_buckets", "vae_tiling"} <= set(settings["model"])
    assert set(settings["edit"]) == {f.name for f in dataclasses.fields(EditSettings)}
    assert settings["job"] == {"mode": "edit"} and not {"output", "storage", "metrics"} & set(settings)


def test_concepts_and_captions_count_only_for_the_edits_that_use_them():
    config = Config()
    other = changed(config, "concepts", num_captions=3)
    before, after = run_settings(config).by_use, run_settings(other).by_use
    # by use: [base, with a caption, with concepts, with both]
    assert (before[0], before[1]) == (after[0], after[1]) and before[2] != after[2] and before[3] != after[3]
    assert run_settings(changed(config, "captions", model="other-blip")).by_use[1] != before[1]
    assert len(set(before)) == 4
    # in noop mode no helper model runs: they never count
    noop = changed(config, "job", mode="noop")
    assert len(set(run_settings(noop).by_use)) == 1


def test_the_family_comes_from_the_model_folder(tmp_path):
    components = {name: ["diffusers", "X"] for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    folder = tmp_path / "xl"
    folder.mkdir()
    xl = {"_class_name": "StableDiffusionXLPipeline", **components, "text_encoder_2": ["transformers", "X"],
          "tokenizer_2": ["transformers", "X"]}
    (folder / "model_index.json").write_text(json.dumps(xl))
    assert model_family(str(folder)) == "sdxl"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **components}))
    assert model_family(str(folder)) == "sd"
    assert model_family(str(tmp_path / "missing")) is None and model_family("no-such/hub-model") is None
    config = Config(model=ModelConfig(pretrained=str(folder)))
    assert pixel_settings(config, family=model_family(str(folder)))["model"]["family"] == "sd"
    assert run_settings(config).settings[run_settings(config).by_use[0]]["model"]["family"] == "sd"
    # resolved before the run (preflight.resolve_model_family): the config's own family counts
    resolved = Config(model=ModelConfig(pretrained="org/not-cached", family="sdxl"))
    assert run_settings(resolved).settings[run_settings(resolved).by_use[0]]["model"]["family"] == "sdxl"


def test_candidates_count_only_when_there_are_several():
    from diffedit_batch.config import CandidatesConfig, MetricsConfig

    assert "candidates" not in pixel_settings(Config())
    several = Config(candidates=CandidatesConfig(count=4, rank_by="clip_image", vary={"guidance_scale": [5, 12]}),
                     metrics=MetricsConfig(clip_model="models/clip"))
    settings = pixel_settings(several)
    assert settings["candidates"]["count"] == 4 and settings["candidates"]["clip_model"] == "models/clip"
    other_clip = Config(candidates=several.candidates, metrics=MetricsConfig(clip_model="models/other-clip"))
    assert settings_fingerprint(pixel_settings(other_clip)) != settings_fingerprint(settings)


def test_only_what_draws_the_candidates_counts_never_the_selection_or_which_pictures_are_written():
    from diffedit_batch.config import CandidatesConfig, MetricsConfig

    base = CandidatesConfig(count=4, keep=1, rank_by="clip_image", vary={"guidance_scale": [5, 12]})
    metrics = MetricsConfig(clip_model="models/clip")
    fingerprint = settings_fingerprint(pixel_settings(Config(candidates=base, metrics=metrics)))
    # (a selection that starts or stops using CLIP scores brings the CLIP model in or out: that one counts)
    for change in ({"keep": 2}, {"rank_by": "clip_directional"}, {"min": {"clip_image": 0.3}},
                   {"max": {"mask_coverage": 0.5}}, {"keep_rejected": True}):
        selected = dataclasses.replace(base, **change)
        assert settings_fingerprint(pixel_settings(Config(candidates=selected, metrics=metrics))) == fingerprint, change
    for change in ({"count": 3}, {"vary": {"guidance_scale": [5, 11]}}, {"vary": {"guidance_scale": [5, 12],
                                                                                  "seed": True}}):
        drawn = dataclasses.replace(base, **change)
        assert settings_fingerprint(pixel_settings(Config(candidates=drawn, metrics=metrics))) != fingerprint, change


def test_differences_name_each_key_with_its_old_and_new_value():
    old = pixel_settings(Config())
    new = pixel_settings(changed(Config(), "edit", guidance_scale=5.0), captions=True)
    assert settings_differences(old, new) == ["captions: (not used) -> (used)", "edit.guidance_scale: 7.5 -> 5.0"]
    assert settings_differences(old, old) == [] and settings_fingerprint(old) != settings_fingerprint(new)


# --- issue 36: the model is what its files or its commit are -----------------------------------------------------


def _model_folder(tmp_path, name="sd"):
    """A small folder laid out as a model: a safetensors-like weight file, configs, a README."""
    folder = tmp_path / name
    (folder / "unet").mkdir(parents=True)
    header = b'{"w":{"dtype":"F32","shape":[256],"data_offsets":[0,1024]}}'
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + bytes(range(256)) * 4)
    (folder / "unet" / "config.json").write_text('{"in_channels": 4}')
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "README.md").write_text("a model card")
    return folder


def _identity(value, tmp_path, revision=None, key="model.pretrained", **kwargs):
    from diffedit_batch.pipeline.model_identity import identify_model

    return identify_model(key, str(value), revision, digest_cache=str(tmp_path / "digests.json"), **kwargs)


def test_a_fine_tune_saved_over_the_folder_is_another_model_however_the_folder_is_spelled(tmp_path, monkeypatch):
    import os

    folder = _model_folder(tmp_path)
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)
    before = _identity(folder, tmp_path)
    assert before.fingerprinted.startswith("folder xxh3-128:") and before.folder == str(folder)
    for spelling in (f"{folder}/", "./sd", "sd/.", str(tmp_path / "link"), "link/"):
        assert _identity(spelling, tmp_path).fingerprinted == before.fingerprinted, spelling
    (folder / "README.md").write_text("another card")  # documentation changes no pixel
    assert _identity(folder, tmp_path).fingerprinted == before.fingerprinted
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same name, size and safetensors header: only the bytes tell
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    after = _identity(folder, tmp_path)
    assert after.fingerprinted != before.fingerprinted
    config = Config(model=ModelConfig(pretrained=str(folder)))
    old = run_settings(config, {"pretrained": before.fingerprinted, "revision": None, "vae": None})
    new = run_settings(config, {"pretrained": after.fingerprinted, "revision": None, "vae": None})
    assert old.by_use[0] != new.by_use[0]
    assert settings_differences(old.settings[old.by_use[0]], new.settings[new.by_use[0]]) == [
        f'model.pretrained: "{before.fingerprinted}" -> "{after.fingerprinted}"']


def test_the_digest_is_cached_by_path_size_and_mtime(tmp_path):
    from diffedit_batch.data.model_digest import folder_digest

    folder = _model_folder(tmp_path)
    cache = str(tmp_path / "digests.json")
    first = folder_digest(str(folder), cache=cache)
    assert first.files == 3 and first.hashed_bytes == first.bytes > 1024  # the README does not count
    again = folder_digest(str(folder), cache=cache)
    assert again.digest == first.digest and again.hashed_bytes == 0  # a stat per file
    (folder / "unet" / "config.json").write_text('{"in_channels": 9}')
    changed_config = folder_digest(str(folder), cache=cache)
    assert changed_config.digest != first.digest and changed_config.hashed_bytes == len('{"in_channels": 9}')
    assert folder_digest(str(folder), cache=None).digest == changed_config.digest


def test_a_hub_id_is_its_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from diffedit_batch.pipeline.model_identity import ModelIdentities
    from diffedit_batch.pipeline.preflight import HubModel

    commit, newer = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"
    cache = tmp_path / "hf"
    (cache / "models--org--sd" / "refs").mkdir(parents=True)
    (cache / "models--org--sd" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def hub(repo_id, revision):
        raise AssertionError("asked the hub offline")

    offline = _identity("org/sd", tmp_path, hub_lookup=hub)
    assert (offline.fingerprinted, offline.source) == (f"org/sd@{commit}", "Hugging Face cache")
    assert _identity("org/sd", tmp_path, revision=newer, hub_lookup=hub).commit == newer  # a commit as revision
    unknown = _identity("org/sd", tmp_path, revision="v2", hub_lookup=hub)  # no refs/v2: id and revision stand
    assert (unknown.commit, unknown.fingerprinted, unknown.source) == (None, "org/sd", "unresolved")
    assert ModelIdentities(unknown).settings() == {"pretrained": "org/sd", "revision": "v2", "vae": None}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    online = _identity("org/sd", tmp_path, hub_lookup=lambda repo, revision: HubModel(files=None, sha=newer))
    assert (online.commit, online.source) == (newer, "hub")
    pinned = ModelIdentities(online).pinned(Config(model=ModelConfig(pretrained="org/sd")))
    assert pinned.model.revision == newer  # every actor loads the commit the settings name

    def no_answer(repo, revision):
        raise TimeoutError("no answer in 5 s")

    assert _identity("org/sd", tmp_path, hub_lookup=no_answer).commit == commit  # the cache then


def test_model_vae_counts_by_its_files_too(tmp_path):
    from diffedit_batch.pipeline.model_identity import identify_models

    model, vae = _model_folder(tmp_path, "sd"), _model_folder(tmp_path, "vae")
    config = Config(model=ModelConfig(pretrained=str(model), vae=str(vae)))
    first = identify_models(config, digest_cache=None)
    assert first.vae.fingerprinted.startswith("folder xxh3-128:")
    assert first.settings()["vae"] == first.vae.fingerprinted and first.settings()["revision"] is None
    (vae / "unet" / "config.json").write_text('{"in_channels": 16}')
    assert identify_models(config, digest_cache=None).settings()["vae"] != first.settings()["vae"]
    noop = identify_models(dataclasses.replace(config, job=dataclasses.replace(config.job, mode="noop")))
    assert noop.pretrained.digest is None and noop.pretrained.fingerprinted == str(model)  # nothing hashed
