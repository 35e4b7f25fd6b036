from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from diffedit_batch.config import load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples"

MANIFEST_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("source_prompt", pa.string()), ("target_prompt", pa.string()),
    ("target_prompts", pa.list_(pa.string())), ("inversion_prompt", pa.string()), ("seed", pa.int64()),
])


@pytest.fixture
def job_config(tiny_config_overrides):
    def make(*overrides: str):
        return load_config(REPO / "configs" / "tiny.yaml", [*tiny_config_overrides, *overrides])

    return make


@pytest.fixture
def example_copy(tmp_path):
    """The bundled example manifest and photos, copied so tests may add files next to them."""
    target = tmp_path / "example"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("*.py"))
    return target


def write_manifest(path: Path, rows: list[dict], schema: pa.Schema = MANIFEST_SCHEMA) -> Path:
    table = pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
    pq.write_table(table, path)
    return path


def read_records(prefix) -> list[dict]:
    folder = Path(prefix) / "manifest"
    if not folder.exists():
        return []
    return ds.dataset(str(folder), format="parquet").to_table().to_pylist()
