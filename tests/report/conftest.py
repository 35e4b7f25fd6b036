"""One real job for the report tests: tiny Stable Diffusion, tiny CLIP, five rows (three edit, two fail)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@dataclass
class JobRun:
    prefix: Path
    folder: Path  # the manifest and its pictures
    clip_dir: Path
    records: dict  # id -> record
    config: object


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from diffedit_batch.testing.tiny_recipe import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def _pictures(folder: Path) -> dict[str, str]:
    from skimage import data

    names = {}
    for name, array in [("astronaut", data.astronaut()), ("coffee", data.coffee()), ("chelsea", data.chelsea())]:
        image = Image.fromarray(array)
        image.thumbnail((96, 96))  # small originals keep the PNG writes and thumbnails quick
        image.save(folder / f"{name}.png")
        names[name] = f"{name}.png"
    return names


@pytest.fixture(scope="session")
def report_job(tmp_path_factory, tiny_model_dir, tiny_clip_dir, ray_local) -> JobRun:
    """Runs the real job once on five rows: a, b, c edit; d's picture is missing; e's seed is invalid.

    On the session's shared Ray (tests/conftest.py); the resources asked for fit in 2 CPUs as well.
    """
    from diffedit_batch.config import load_config
    from diffedit_batch.data.results import iter_result_records
    from diffedit_batch.pipeline import run_job

    folder = tmp_path_factory.mktemp("report-input")
    pictures = _pictures(folder)
    rows = [
        {"id": "a", "image": pictures["astronaut"], "source_prompt": "a photo of an astronaut",
         "target_prompt": "a photo of a robot", "seed": 1},
        {"id": "b", "image": pictures["coffee"], "source_prompt": "a cup of coffee", "target_prompt": "a cup of tea",
         "seed": 2},
        {"id": "c", "image": pictures["chelsea"], "source_prompt": "a cat", "target_prompt": "a dog", "seed": 3},
        {"id": "d", "image": "missing.png", "source_prompt": "x", "target_prompt": "y", "seed": 4},
        {"id": "e", "image": pictures["chelsea"], "source_prompt": "a cat", "target_prompt": "a fox", "seed": -1},
    ]
    schema = pa.schema([("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string()),
                        ("target_prompt", pa.string()), ("seed", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "manifest.parquet")
    config = load_config(REPO / "configs" / "tiny.yaml", [
        f"model.pretrained={tiny_model_dir}",
        f"metrics.clip_model={tiny_clip_dir}",
        "metrics.clip_cpus_per_actor=0.25",
        "job.cpus_per_actor=0.5",  # with the read task (1 CPU), all fits in a 2-CPU Ray
        "job.write_cpus=0.5",
        "job.decode_cpus=0.5",
        "edit.num_inference_steps=4",
        "job.progress_interval_s=600",
    ])
    prefix = tmp_path_factory.mktemp("report-job") / "out"
    summary = run_job(config, str(folder / "manifest.parquet"), str(prefix))
    assert (summary.ok, summary.failed) == (3, 2), summary.line()
    records = {r["id"]: r for batch in iter_result_records(str(prefix)) for r in batch}
    return JobRun(prefix=prefix, folder=folder, clip_dir=tiny_clip_dir, records=records, config=config)
