"""The optional CLIP scoring stage, between edit and write: an actor holding one CLIP model.

For each edited row it scores the edit against the target prompt and the input against the source prompt
(`clip_target_score`, `clip_source_score`: cosine similarities, see diffedit_batch.recipe.clip_score). Rows
that are not edited pass through with null scores; a batch that fails leaves its scores null rather than
failing edits that are already done.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from PIL import Image

from diffedit_batch.config import Config
from diffedit_batch.data.status import Status

from ..rows import require, to_table
from .spec import Stage, quiet_model_loading

log = logging.getLogger(__name__)

# pending rows are the edited ones; `pixels` (the input) and `edited` are both at model resolution
READS = ("status", "model_width", "model_height", "pixels", "edited", "source_prompt", "target_prompt")
ADDS = ("clip_target_score", "clip_source_score")


class ClipScoreStage:
    """Ray Data callable class: ``__init__`` loads CLIP once per actor, ``__call__`` scores a batch."""

    def __init__(self, clip_model: str, device: str = "auto"):
        quiet_model_loading()
        from diffedit_batch.recipe.clip_score import ClipScorer

        self.scorer = ClipScorer(clip_model, device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        require(batch, READS, "clip scores")
        rows = batch.to_pylist()
        # Candidates come scored by the edit actor (it ranks them): not scored twice.
        edited = [row for row in rows if row["status"] == Status.PENDING and row.get("edited") and row.get("pixels")
                  and row.get("clip_target_score") is None]
        try:
            self._score(edited)
        except Exception:  # noqa: BLE001 - a metric failure must not fail finished edits
            log.exception("CLIP scoring failed for a batch of %d rows; their scores stay null", len(edited))
            for row in edited:
                row["clip_target_score"] = row["clip_source_score"] = None
        return to_table(rows)

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


def clip_stage(config: Config) -> Stage:
    metrics = config.metrics
    return Stage(
        name="clip scores", run=ClipScoreStage, reads=READS, adds=ADDS, cpus=metrics.clip_cpus_per_actor,
        gpus=metrics.clip_gpus_per_actor, actors=(metrics.clip_num_actors, metrics.clip_num_actors),
        batch_size=config.job.batch_size, kwargs={"clip_model": metrics.clip_model, "device": metrics.clip_device},
    )
