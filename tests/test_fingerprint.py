"""Settings fingerprints: what changes pixels counts, what only changes how or where the job runs does not."""

from __future__ import annotations

import dataclasses
import json

from diffedit_batch.config import Config, EditSettings, ModelConfig
from diffedit_batch.config.fingerprint import OPERATIONAL, model_family, pixel_settings, run_settings
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
    assert set(settings["model"]) == model_keys - OPERATIONAL["model"]
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
