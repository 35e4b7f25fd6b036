"""The report's data files, written while the records stream by.

- ``data/index.js``: one compact entry per record (status, error class, settings fingerprint, metrics), as
  columns, so the
  browser filters and sorts every record without loading any text. About 40 bytes a record: 4 MB for 100k.
  With candidates, also each record's fate and request key (``report.candidates``), and the candidates' CLIP
  directional and image scores; without, none of these.
- ``data/rows-<n>.js``: the records' display fields (id, prompts, error, thumbnail stem), ``chunk_rows``
  per file in record order, loaded only when a page shows one of their rows.

They are scripts that hand their data to a global (``window.DIFFEDIT_INDEX``, ``window.__diffeditRows``)
rather than JSON: a page opened from ``file://`` may load scripts next to it but may not fetch files.
"""

from __future__ import annotations

import json
from array import array

from diffedit_batch.data.storage import StorageOptions, join, write_bytes_atomic
from diffedit_batch.redaction import redact_text

from .candidates import MAX_FATES, OTHER, fate_of, is_candidate, request_key

# Metric columns shown, filtered and sorted, with their labels and the decimals kept in the index.
METRICS = {
    "mask_coverage": ("mask coverage", 4),
    "background_psnr": ("background PSNR (dB)", 2),
    "background_ssim": ("background SSIM", 4),
    "clip_target_score": ("CLIP edit vs target", 4),
    "clip_source_score": ("CLIP input vs source", 4),
}
# Scores only candidates have: in the index (and histograms) only when a record has one.
CANDIDATE_METRICS = {
    "clip_directional": ("CLIP directional", 4),
    "clip_image": ("CLIP input vs edit", 4),
    "clip_label": ("CLIP label probability", 4),
}
_DECIMALS = {name: digits for name, (_, digits) in {**METRICS, **CANDIDATE_METRICS}.items()}
_TEXT_LIMIT = 600  # characters of a prompt or error kept for display


def _js(value) -> str:
    """A JSON literal safe in any script: ASCII only (no raw U+2028/9), and no "</" that could end an inline one."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _short(text):
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


class PageData:
    """Accumulates the index columns and writes a rows file every ``chunk_rows`` records."""

    def __init__(self, report_uri: str, options: StorageOptions | None, chunk_rows: int):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.report_uri = report_uri
        self.options = options
        self.chunk_rows = chunk_rows
        self.statuses: dict[str, int] = {}
        self.error_classes: dict[str, int] = {}
        self.status = array("b")
        self.error_class = array("h")
        self.settings_prints: dict[str, int] = {}  # a record's settings fingerprint ("unknown" before they existed)
        self.settings = array("h")
        self.metrics = {name: array("d") for name in METRICS}  # NaN = null
        self.fates: dict[str, int] = {}  # candidates only: a record's fate (report.candidates.fate_of)
        self.fate = array("b")
        self.request_keys = array("i")
        self._chunk: list[dict] = []
        self.chunks = 0

    def __len__(self) -> int:
        return len(self.status)

    def add(self, record: dict, thumbs: str | None) -> None:
        status = record.get("status") or "unknown"
        self.status.append(self.statuses.setdefault(status, len(self.statuses)))
        error_class = record.get("error_class")
        self.error_class.append(
            -1 if error_class is None else self.error_classes.setdefault(error_class, len(self.error_classes))
        )
        settings = record.get("settings_fingerprint") or "unknown"
        self.settings.append(self.settings_prints.setdefault(settings, len(self.settings_prints)))
        for name in CANDIDATE_METRICS:
            if name not in self.metrics and record.get(name) is not None:
                self.metrics[name] = array("d", [float("nan")]) * (len(self) - 1)
        for name, values in self.metrics.items():
            value = record.get(name)
            values.append(float("nan") if value is None else float(value))
        row = {
            "id": _short(record.get("id")),
            "status": status,
            "error": _short(redact_text(record.get("error"))),  # records written before redaction existed
            "error_class": error_class,
            "source_prompt": _short(record.get("source_prompt")),
            "target_prompt": _short(record.get("target_prompt")),
            "seed": None if record.get("seed") is None else str(record["seed"]),  # 64-bit: exact as text
            "thumbs": thumbs,
        }
        self._add_candidate(record, row)
        self._chunk.append(row)
        if len(self._chunk) == self.chunk_rows:
            self._flush()

    def _add_candidate(self, record: dict, row: dict) -> None:
        """A candidate's fate and request key in the index, its index, drawn settings and reason in its row. The
        columns start with the first candidate (earlier records get none: -1)."""
        if not is_candidate(record):
            if self.fates:
                self.fate.append(-1)
                self.request_keys.append(-1)
            return
        if not self.fates:
            self.fate = array("b", [-1]) * (len(self) - 1)
            self.request_keys = array("i", [-1]) * (len(self) - 1)
        fate = fate_of(record)
        if fate not in self.fates and len(self.fates) >= MAX_FATES:
            fate = OTHER
        self.fate.append(self.fates.setdefault(fate, len(self.fates)))
        self.request_keys.append(request_key(record))
        row.update(candidate=record["candidate"], candidate_settings=_short(record.get("candidate_settings")),
                   filter_reason=_short(record.get("filter_reason")))

    def _flush(self) -> None:
        if not self._chunk:
            return
        text = f"window.__diffeditRows({self.chunks},{_js(self._chunk)});\n"
        write_bytes_atomic(join(self.report_uri, "data", f"rows-{self.chunks}.js"), text.encode(), self.options)
        self.chunks += 1
        self._chunk = []

    def finish(self, page_size: int) -> None:
        """Write the last rows file and the index."""
        self._flush()
        index = {
            "count": len(self),
            "chunkRows": self.chunk_rows,
            "pageSize": page_size,
            "statuses": list(self.statuses),
            "errorClasses": list(self.error_classes),
            "status": list(self.status),
            "errorClass": list(self.error_class),
            "settingsPrints": list(self.settings_prints),
            "settings": list(self.settings),
            "metricLabels": {name: label for name, (label, _) in {**METRICS, **CANDIDATE_METRICS}.items()
                             if name in self.metrics},
            "metrics": {
                name: [None if value != value else round(value, _DECIMALS[name]) for value in values]
                for name, values in self.metrics.items()
            },
        }
        if self.fates:
            index.update(fates=list(self.fates), fate=list(self.fate), requestKeys=list(self.request_keys))
        text = f"window.DIFFEDIT_INDEX={_js(index)};\n"
        write_bytes_atomic(join(self.report_uri, "data", "index.js"), text.encode(), self.options)
