"""Re-runs that never mix: an edit is done only for the request and the settings that made it (noop mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffedit_batch.data.fingerprints import settings_fingerprint
from diffedit_batch.pipeline import SettingsChanged, run_job

from .conftest import read_records, write_manifest

NOOP = ("job.mode=noop", "model.resolution=64")


@pytest.fixture
def manifest(tmp_path):
    """A manifest of four rows over small pictures; `make(**changes)` writes it again with some rows changed."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for k in range(4):
        Image.new("RGB", (32, 24), (60 * k, 80, 90)).save(folder / f"p{k}.png")

    def make(changes: dict[str, dict] | None = None) -> str:
        rows = [{"id": f"r{k}", "image": str(folder / f"p{k}.png"), "source_prompt": "a photo",
                 "target_prompt": f"a painting {k}", **(changes or {}).get(f"r{k}", {})} for k in range(4)]
        return str(write_manifest(tmp_path / "manifest.parquet", rows))

    return make


def by_id(output) -> dict[str, dict]:
    records = read_records(output)
    assert len(records) == len({r["id"] for r in records}), "one record per edit"
    return {r["id"]: r for r in records}


def runs(output) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(Path(output, "runs").glob("*.json"))]


def test_a_revised_prompt_is_edited_again_and_its_record_replaced(ray_local, job_config, manifest, tmp_path):
    output = str(tmp_path / "out")
    first = run_job(job_config(*NOOP), manifest(), output)
    assert (first.ok, first.changed) == (4, 0)
    before = by_id(output)
    assert all(r["request_fingerprint"] and r["settings_fingerprint"] for r in before.values())
    # the run file describes the settings behind the fingerprint its records carry
    [run] = runs(output)
    assert run["settings"][before["r0"]["settings_fingerprint"]]["edit"]["guidance_scale"] == 7.5
    assert settings_fingerprint(run["settings"][before["r0"]["settings_fingerprint"]]) == \
        before["r0"]["settings_fingerprint"]

    again = run_job(job_config(*NOOP), manifest({"r2": {"target_prompt": "a revised painting"}}), output)
    assert (again.ok, again.skipped, again.changed) == (1, 3, 1)
    assert "changed 1 (request changed, edited again)" in again.line()
    after = by_id(output)
    assert after["r2"]["target_prompt"] == "a revised painting" and after["r2"]["run_id"] == again.run_id
    assert after["r2"]["request_fingerprint"] != before["r2"]["request_fingerprint"]
    assert {k: after[k]["run_id"] for k in ("r0", "r1", "r3")} == {k: first.run_id for k in ("r0", "r1", "r3")}
    assert runs(output)[-1]["changed"] == 1


def test_a_change_of_settings_stops_the_run_until_it_is_decided(ray_local, job_config, manifest, tmp_path):
    output = tmp_path / "out"
    first = run_job(job_config(*NOOP), manifest(), str(output))
    files_before = sorted(p.name for p in (output / "manifest").iterdir())

    with pytest.raises(SettingsChanged) as refused:
        run_job(job_config(*NOOP, "edit.guidance_scale=5", "model.max_unet_batch=3"), manifest(), str(output))
    message = str(refused.value)
    assert "4 edit(s)" in message and "edit.guidance_scale: 7.5 -> 5.0" in message
    assert "max_unet_batch" not in message and "--on-settings-change redo" in message
    # nothing was done, nothing of the refused run stays
    assert sorted(p.name for p in (output / "manifest").iterdir()) == files_before
    assert len(runs(output)) == 1 and not (output / "_work").exists()

    kept = run_job(job_config(*NOOP, "edit.guidance_scale=5"), manifest(), str(output), on_settings_change="keep")
    assert (kept.ok, kept.skipped, kept.settings_kept) == (0, 4, 4)
    assert {r["run_id"] for r in by_id(output).values()} == {first.run_id}

    redone = run_job(job_config(*NOOP, "edit.guidance_scale=5"), manifest(), str(output), on_settings_change="redo")
    assert (redone.ok, redone.skipped, redone.settings_redone) == (4, 0, 4)
    records = by_id(output)
    assert {r["run_id"] for r in records.values()} == {redone.run_id}
    assert runs(output)[-1]["settings"][records["r0"]["settings_fingerprint"]]["edit"]["guidance_scale"] == 5.0
    # and under the new settings the next run has nothing to do
    assert run_job(job_config(*NOOP, "edit.guidance_scale=5"), manifest(), str(output)).skipped == 4


@pytest.mark.slow
def test_records_from_before_fingerprints_still_read_and_are_kept_unless_redone(ray_local, job_config, manifest,
                                                                                  tmp_path):
    output = tmp_path / "out"
    run_job(job_config(*NOOP), manifest(), str(output))
    for path in (output / "manifest").glob("*.parquet"):  # as an older version wrote them: no such columns
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["request_fingerprint", "settings_fingerprint"]), path)
    kept = run_job(job_config(*NOOP), manifest(), str(output))
    assert (kept.ok, kept.skipped, kept.unknown_settings) == (0, 4, 4)
    assert "4 recorded before fingerprints" in kept.line()
    redone = run_job(job_config(*NOOP), manifest(), str(output), on_settings_change="redo")
    assert (redone.ok, redone.unknown_settings) == (4, 4)
    assert all(r["settings_fingerprint"] for r in by_id(output).values())


@pytest.mark.slow
def test_a_fine_tune_saved_over_the_model_folder_is_a_settings_change_and_its_spelling_is_not(
        ray_local, job_config, manifest, tmp_path, tiny_model_dir, monkeypatch):
    import os
    import shutil

    monkeypatch.setenv("DIFFEDIT_BATCH_DIGEST_CACHE", str(tmp_path / "digests.json"))
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    output, edit = str(tmp_path / "out"), ("model.resolution=64", "edit.num_inference_steps=2")
    first = run_job(job_config(*edit, f"model.pretrained={model}"), manifest(), output)
    assert first.ok == 4
    [run] = runs(output)
    identity = run["models"]["model.pretrained"]
    assert identity["folder"] == str(model) and identity["digest"].startswith("xxh3-128:")
    # the same folder spelled otherwise is the same model
    monkeypatch.chdir(tmp_path)
    again = run_job(job_config(*edit, "model.pretrained=./model/"), manifest(), output)
    assert (again.ok, again.skipped, again.settings_redone) == (0, 4, 0)
    # a fine-tune saved over it: every name, size and safetensors header kept, other bytes
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(255 - byte for byte in data[-4:])
    weights.write_bytes(bytes(data))
    with pytest.raises(SettingsChanged) as refused:
        run_job(job_config(*edit, f"model.pretrained={model}"), manifest(), output)
    message = str(refused.value)
    assert message.startswith("4 edit(s) of this manifest were recorded ok under other settings: model.pretrained: "
                              f'"folder {identity["digest"]}" -> "folder xxh3-128:')
    assert len(runs(output)) == 2 and os.listdir(tmp_path / "out" / "manifest")  # nothing of the refused run
