"""What a manifest needs from the optional recipe stages, found by scanning its prompt and concept columns.

The rows are expanded and judged exactly as the job judges them (`manifest.expand_edits`, `manifest.needs_caption`),
a record batch at a time, so the scan's memory is the number of distinct concepts, not the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow.dataset as pads

from .manifest import expand_edits, needs_caption
from .storage import StorageOptions, resolve

# The columns a request's concepts and source come from; the others do not change what the stages need.
_COLUMNS = ("source_prompt", "target_prompt", "target_prompts", "source_concept", "target_concept")


@dataclass
class ManifestNeeds:
    concepts: list[str] = field(default_factory=list)  # distinct concepts, first-seen order
    rows_without_source: int = 0  # edit requests with neither a source prompt nor a source concept


def scan_manifest_needs(files: list[str], schema_names: list[str], options: StorageOptions | None = None) -> ManifestNeeds:
    needs = ManifestNeeds()
    columns = [name for name in _COLUMNS if name in schema_names]
    filesystem, _ = resolve(files[0], options)
    dataset = pads.dataset([resolve(uri, options)[1] for uri in files], format="parquet", filesystem=filesystem)
    seen: dict[str, None] = {}
    for batch in dataset.to_batches(columns=columns):
        for row in batch.to_pylist():
            for request in expand_edits(row):
                for concept in (request.source_concept, request.target_concept):
                    if isinstance(concept, str):
                        seen.setdefault(concept, None)
                if needs_caption(request.source_prompt, request.source_concept, caption_inversion=False):
                    needs.rows_without_source += 1
    needs.concepts = list(seen)
    return needs
