"""The optional CLIP scoring stage, between edit and write: an actor holding one CLIP model.

For each edited row it scores the edit against the target prompt and the input against the source prompt
(`clip_target_score`, `clip_source_score`: cosine similarities, see diffedit_batch.recipe.clip_score). Rows
that are not edited pass through with null scores; a batch that fails leaves its scores null rather than
failing edits that are already done. Like the other stages, it does not import Ray.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from PIL import Image

from diffedit_batch.data.status import Status

from ..rows import WORK_SCHEMA, to_table

log = logging.getLogger(__name__)

CLIP_SCORE_FIELDS = (pa.field("clip_target_score", pa.float64()), pa.field("clip_source_score", pa.float64()))
# The rows leaving this stage: the work row plus the two scores.
SCORED_WORK_SCHEMA = pa.schema(list(WORK_SCHEMA) + list(CLIP_SCORE_FIELDS))

REQUIRED_KEYS = {
    "status": "pending rows are the edited ones",
    "model_width": "model-resolution width of `pixels` and `edited`",
    "model_height": "model-resolution height",
    "pixels": "the model-resolution input (RGB bytes), which the write stage drops after the metrics",
    "edited": "the model-resolution edit (RGB bytes)",
    "source_prompt": "scored against the input (null: no source score)",
    "target_prompt": "scored against the edit",
}


class ClipScoreStage:
    """Ray Data callable class: ``__init__`` loads CLIP once per actor, ``__call__`` scores a batch."""

    def __init__(self, clip_model: str, device: str = "auto"):
        from diffedit_batch.recipe.clip_score import ClipScorer

        self.scorer = ClipScorer(clip_model, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = sorted(set(REQUIRED_KEYS) - set(batch.schema.names))
        if missing:
            raise KeyError(f"ClipScoreStage needs columns {', '.join(missing)}")
        rows = batch.to_pylist()
        edited = [row for row in rows if row["status"] == Status.PENDING and row.get("edited") and row.get("pixels")]
        try:
            self._score(edited)
        except Exception:  # noqa: BLE001 - a metric failure must not fail finished edits
            log.exception("CLIP scoring failed for a batch of %d rows; their scores stay null", len(edited))
            for row in edited:
                row["clip_target_score"] = row["clip_source_score"] = None
        return to_table(rows, SCORED_WORK_SCHEMA)

    def _score(self, rows: list[dict]) -> None:
        def image(row: dict, column: str) -> Image.Image:
            return Image.frombytes("RGB", (row["model_width"], row["model_height"]), row[column])

        targets = [row for row in rows if row.get("target_prompt")]
        for row, score in zip(
            targets, self.scorer.score([image(r, "edited") for r in targets], [r["target_prompt"] for r in targets])
        ):
            row["clip_target_score"] = score
        sources = [row for row in rows if row.get("source_prompt")]
        for row, score in zip(
            sources, self.scorer.score([image(r, "pixels") for r in sources], [r["source_prompt"] for r in sources])
        ):
            row["clip_source_score"] = score
