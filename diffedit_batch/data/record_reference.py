"""What each result-record column means, and the Markdown table of them (`docs/reference/records.md`).

The columns and their types come from ``RECORD_SCHEMA``; only the meanings live here. A column without a meaning,
or a meaning for a column the schema lacks, is an error, so the reference cannot drift from the schema.
"""

from __future__ import annotations

import pyarrow as pa

from .records import RECORD_SCHEMA

__all__ = ["RECORD_COLUMN_MEANINGS", "record_reference_markdown"]

# One entry per group of columns, in the order the reference shows them.
RECORD_COLUMN_MEANINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("id", "row_id"), "edit id (`<id>` or `<id>#<k>` for `target_prompts`; a candidate's: `<edit id>~c<k>`) and "
     "manifest row id"),
    (("status",), "`ok`, `error`, `duplicate` (a later manifest row with the id of an earlier one, which is the row "
     "edited), or `filtered` (a candidate not kept)"),
    (("error", "error_class"), "a clear message and a short class: `invalid_row`, `storage`, `image_decode`, "
     "`engine`, `duplicate_id`"),
    (("image_uri", "mask_uri"), "the outputs (null unless ok); in shards `PREFIX/shards/<name>.tar#<key>.png`"),
    (("source_image_uri", "source_prompt", "target_prompt", "inversion_prompt", "seed"), "what was used"),
    (("source_concept", "target_concept", "caption"), "concepts (their captions: `PREFIX/concepts/`) and the BLIP "
     "caption, when used"),
    (("prompt_truncated",), "a prompt was longer than the text encoder's 77 tokens and was cut"),
    (("mask_coverage",), "fraction of the image the mask lets change"),
    (("model_id", "width", "height"), "the model, and the input's original size"),
    (("fetch_s", "edit_s", "write_s", "run_id", "finished_at"), "timings (seconds) and provenance"),
    (("node_id",), "the Ray node whose edit actor handled the row (null if it never reached one)"),
    (("request_fingerprint", "settings_fingerprint"), "what made the edit: digests of its request and of the "
     "settings that change pixels (the run files hold the settings behind each); null in records written before "
     "fingerprints existed, which still read"),
    (("candidate", "candidate_settings", "filter_reason"), "with `candidates.count` > 1: the candidate's index, the "
     "settings it drew (JSON), and why a `filtered` one was not kept"),
    (("background_psnr", "background_ssim"), "how well the background (outside the mask) was kept: PSNR (dB, capped "
     "at 100) and SSIM between input and edit at model resolution; null when the mask covers everything or "
     "`metrics.background: false`"),
    (("clip_target_score", "clip_source_score"), "cosine similarity of CLIP embeddings: edit vs target prompt, input "
     "vs source prompt; null unless `metrics.clip_model` is set"),
    (("clip_directional", "clip_image"), "a candidate's InstructPix2Pix scores: cosine of (edit - input) image "
     "embeddings with (target - source) text embeddings, and of input with edit; null unless `metrics.clip_model` "
     "is set"),
    (("source_identity", "source_digest"), "what the source picture was when it was read: its identity as "
     "storage gives it without reading it (size and mtime locally, ETag or generation on S3/GCS) and the digest of "
     "its bytes; a re-run edits again, as changed, a done edit whose picture's identity changed "
     "(`job.verify_sources`); null in records written before they existed"),
    (("source_id", "synthetic", "carried"), "the input row the edit was made from (its id), whether the picture is "
     "made (true in every record; an export's source rows are false), and the input's carried columns as stored, "
     "JSON {column: value} (`input.carry_columns`; their types and ClassLabel names are in the run file)"),
    (("class_name",), "the class of the edit's source row (the `augment.balance_by` column's value, a `ClassLabel` "
     "as its name); null when the run has no class column"),
    (("clip_label",), "CLIP zero-shot probability of the row's class among all classes (`prompts.label_template`); "
     "null unless `candidates.min`, `candidates.max` or `candidates.rank_by` use it"),
)


def _type_name(data_type: pa.DataType) -> str:
    if pa.types.is_timestamp(data_type):
        return f"timestamp ({data_type.tz})" if data_type.tz else "timestamp"
    return {"bool": "bool", "double": "float64", "large_string": "string"}.get(str(data_type), str(data_type))


def record_reference_markdown(schema: pa.Schema = RECORD_SCHEMA) -> str:
    """A Markdown table of every column of ``schema`` (name, type, meaning), grouped as the meanings are.

    Raises ValueError naming a column of ``schema`` that has no meaning, or a meaning's column it lacks.
    """
    described = [name for names, _ in RECORD_COLUMN_MEANINGS for name in names]
    missing = [name for name in schema.names if name not in described]
    unknown = [name for name in described if name not in schema.names]
    if missing or unknown:
        raise ValueError(f"record columns without a meaning in RECORD_COLUMN_MEANINGS: {missing}; "
                         f"meanings of columns the schema lacks: {unknown}")
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for names, meaning in RECORD_COLUMN_MEANINGS:
        columns = ", ".join(f"`{name}`" for name in names)
        types = sorted({_type_name(schema.field(name).type) for name in names}, key=str)
        lines.append(f"| {columns} | {', '.join(types)} | {meaning} |")
    return "\n".join(lines) + "\n"
