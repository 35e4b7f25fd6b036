"""Candidates inside the edit actor: a request becomes `candidates.count` rows before its engine call, and after it
its candidates are scored and all but the best `candidates.keep` filtered (diffedit_batch.recipe.candidates).

Both ends run in the edit actor, on the block it was handed, so a request's candidates are never split across
batches: they share one engine call (one set of mask predictions, one inversion) and are ranked together.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from PIL import Image

from diffedit_batch.config import CandidatesConfig
from diffedit_batch.data.metrics import background_metrics
from diffedit_batch.data.records import request_id_of
from diffedit_batch.data.status import Status
from diffedit_batch.engine.settings import EditSettings
from diffedit_batch.recipe.candidates import CLIP_SCORES, candidate_id, draw_candidates, select_candidates

from ..rows import PAYLOADS

log = logging.getLogger(__name__)


def expand_candidates(rows: list[dict], config: CandidatesConfig, base: EditSettings
                      ) -> tuple[list[dict], dict[str, EditSettings]]:
    """Each pending request of `rows` as its candidates (the others as they are), and each candidate's settings by
    its id. A candidate row is its request's row with the candidate's id (`data.records.candidate_id`), index,
    drawn settings (JSON) and seed."""
    expanded, settings = [], {}
    for row in rows:
        if row["status"] != Status.PENDING:
            expanded.append(row)
            continue
        for candidate in draw_candidates(base, config.vary, config.count, row["seed"]):
            edit_id = candidate_id(row["edit_id"], candidate.index)
            settings[edit_id] = candidate.settings
            expanded.append({**row, "edit_id": edit_id, "candidate": candidate.index, "seed": candidate.seed,
                             "candidate_settings": candidate.drawn_json()})
    return expanded, settings


def score_and_select(rows: list[dict], config: CandidatesConfig, scorer=None, labels: "LabelTexts | None" = None
                     ) -> None:
    """Score each edited candidate in `rows` (mask coverage is there already; background PSNR/SSIM; the CLIP scores
    with `scorer`, and clip_label with `labels`), then keep the best `config.keep` of each request that pass the
    floors; the others become `filtered` with the reason, their pictures dropped unless `config.keep_rejected`.
    With one edit per request held to floors (`config.filters_single`) each edited row is its request's one
    candidate. In place."""
    single = config.filters_single
    edited = [row for row in rows if (single or row.get("candidate") is not None) and row["status"] == Status.PENDING
              and row.get("edited")]
    for row in edited:
        _background(row)
    if scorer is not None and edited:
        _clip(edited, scorer)
        if labels is not None and "clip_label" in config.scores_used:
            _clip_label(edited, scorer, labels)
    by_request: dict[str, list[dict]] = defaultdict(list)
    for row in edited:
        by_request[request_id_of(row["edit_id"], row["candidate"])].append(row)
    for candidates in by_request.values():
        scores = [{name: row.get(name) for name in (*CLIP_SCORES, "mask_coverage", "background_psnr",
                                                    "background_ssim")} for row in candidates]
        verdicts = select_candidates(scores, keep=config.keep, rank_by=config.rank_by, floors=config.min,
                                     ceilings=config.max)
        for row, verdict in zip(candidates, verdicts):
            if verdict.kept:
                continue
            row.update(status=Status.FILTERED, filter_reason=verdict.reason)
            if not config.keep_rejected:
                row.update(dict.fromkeys(PAYLOADS))


def _pictures(row: dict) -> tuple[np.ndarray, np.ndarray]:
    size = (row["model_height"], row["model_width"], 3)
    return np.frombuffer(row["pixels"], np.uint8).reshape(size), np.frombuffer(row["edited"], np.uint8).reshape(size)


def _background(row: dict) -> None:
    model_input, model_edit = _pictures(row)
    mask = np.frombuffer(row["mask"], np.uint8).reshape(row["mask_height"], row["mask_width"])
    try:
        row["background_psnr"], row["background_ssim"] = background_metrics(model_input, model_edit, mask)
    except ValueError as error:  # stays null: a floor on it then filters the candidate, saying why
        log.warning("no background metrics for %r: %s", row["edit_id"], error)


def _clip(rows: list[dict], scorer) -> None:
    inputs: dict[tuple, Image.Image] = {}
    pictures = []
    for row in rows:
        key = (row["source_image_uri"], row["model_width"], row["model_height"])
        if key not in inputs:  # a request's candidates share their input: embedded once
            inputs[key] = Image.fromarray(_pictures(row)[0])
        pictures.append(inputs[key])
    edits = [Image.fromarray(_pictures(row)[1]) for row in rows]
    # The texts of the change: prompts, else concepts, else the caption that stood in for the source.
    sources = [row.get("source_prompt") or row.get("source_concept") or row.get("caption") for row in rows]
    targets = [row.get("target_prompt") or row.get("target_concept") for row in rows]
    try:
        scores = scorer.edit_scores(pictures, edits, sources, targets)
    except Exception:  # noqa: BLE001 - a scorer failure leaves the scores null: floors on them filter, saying why
        log.exception("CLIP scoring failed for %d candidates; their CLIP scores stay null", len(rows))
        return
    for row, score in zip(rows, scores):
        row.update(score)



class LabelTexts:
    """The clip_label score's choices: one text per class of the label column (`prompts.label_template` filled with
    each class name), and each class's place among them."""

    def __init__(self, template: str, classes: list[str]):
        from diffedit_batch.data.templates import placeholders, render

        column = placeholders(template)[0]
        self.texts = [render(template, {column: name}, {}) for name in classes]
        self.index = {name: k for k, name in enumerate(classes)}


def _clip_label(rows: list[dict], scorer, labels: LabelTexts) -> None:
    if not labels.texts:
        return  # no classes known: the scores stay null, and a floor on them filters, saying why
    edits = [Image.fromarray(_pictures(row)[1]) for row in rows]
    classes = [labels.index.get(row.get("class_name")) for row in rows]
    try:
        scores = scorer.label_probabilities(edits, labels.texts, classes)
    except Exception:  # noqa: BLE001 - a scorer failure leaves the scores null: floors on them filter, saying why
        log.exception("clip_label scoring failed for %d edits; their scores stay null", len(rows))
        return
    for row, score in zip(rows, scores):
        row["clip_label"] = score


def candidates_use_clip(config) -> bool:
    """Whether the edit actor scores with CLIP: candidates (or single edits) ranked or filtered by a CLIP score. It
    then scores every edit (the kept ones' CLIP columns included), and the job needs no CLIP stage of its own."""
    return bool(config.candidates.scores_used & set(CLIP_SCORES))
