"""What a manifest needs from the optional recipe stages, found by scanning a few columns before the job.

Only the concept and prompt columns are read, a record batch at a time, so the scan's memory is the number of
distinct concepts, not the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .storage import StorageOptions, resolve

CONCEPT_COLUMNS = ("source_concept", "target_concept")


@dataclass
class ManifestNeeds:
    concepts: list[str] = field(default_factory=list)  # distinct concepts, first-seen order
    rows_without_source: int = 0  # rows with neither a source prompt nor a source concept: a caption stands in


def _present(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """True where a string cell holds non-blank text."""
    stripped = pc.utf8_trim_whitespace(column.cast(pa.string()))
    return pc.fill_null(pc.greater(pc.utf8_length(stripped), 0), False)


def scan_manifest_needs(files: list[str], schema_names: list[str], options: StorageOptions | None = None) -> ManifestNeeds:
    needs = ManifestNeeds()
    columns = [name for name in ("id", *CONCEPT_COLUMNS, "source_prompt") if name in schema_names]
    filesystem, _ = resolve(files[0], options)
    dataset = pads.dataset([resolve(uri, options)[1] for uri in files], format="parquet", filesystem=filesystem)
    seen: dict[str, None] = {}
    for batch in dataset.to_batches(columns=columns):
        for name in CONCEPT_COLUMNS:
            if name in columns:
                values = batch.column(name).cast(pa.string())
                kept = pc.utf8_trim_whitespace(pc.filter(values, _present(values)))
                for concept in pc.unique(kept).to_pylist():
                    seen.setdefault(concept, None)
        with_source = pa.array([False] * batch.num_rows)
        for name in ("source_prompt", "source_concept"):
            if name in columns:
                with_source = pc.or_(with_source, _present(batch.column(name)))
        needs.rows_without_source += batch.num_rows - (pc.sum(with_source).as_py() or 0)
    needs.concepts = list(seen)
    return needs
