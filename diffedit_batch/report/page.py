"""index.html: the summary and histograms rendered here, the grid filled by the inlined script."""

from __future__ import annotations

import datetime as dt
import html
import json

from diffedit_batch.data.run_metadata import settings_described

from .assets import SCRIPT, STYLE
from .candidates import Funnel, funnel_section
from .summary import RunSpan, Summary, run_throughput


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _tile(label: str, value) -> str:
    return f'<div class="tile"><b>{_e(value)}</b>{_e(label)}</div>'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _settings_of(span: RunSpan) -> str:
    """The settings fingerprints of a run's records, most used first."""
    return ", ".join(f"{fingerprint} ({records})" for fingerprint, records in span.settings.most_common())


def _settings_text(settings: dict | None) -> str:
    """Pixel settings as `section.key=value` pairs; a fingerprint no run file describes is unknown."""
    if settings is None:
        return "(no run file describes them)"
    return "; ".join(f"{section}.{key}={json.dumps(value)}" for section, values in settings.items()
                     if isinstance(values, dict) for key, value in values.items())


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def render_page(
    *, prefix: str, summary: Summary, runs: list[dict], histograms: list[str], thumbs_note: str,
    funnel: Funnel | None = None,
) -> str:
    """The whole index.html. ``runs`` are the job's run files (oldest first), ``histograms`` SVG figures,
    ``funnel`` the candidates' (None: a run without candidates)."""
    by_id = {str(run.get("run_id")): run for run in runs}
    described = settings_described(runs)
    throughput = [run_throughput(run_id, span, by_id.get(run_id)) for run_id, span in sorted(summary.runs.items())]
    timed = [row for row in throughput if row["seconds"]]
    total_rate = sum(row["ok"] for row in timed) / sum(row["seconds"] for row in timed) if timed else None
    per_edit = summary.edit_seconds / summary.timed_edits if summary.timed_edits else None
    latest = runs[-1] if runs else None
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    settings = (
        f"<p class=\"muted\">From run {_e(latest.get('run_id'))} (manifest {_e(latest.get('manifest'))}).</p>"
        f"<pre>{_e(json.dumps(latest.get('config'), indent=2))}</pre>"
        if latest and latest.get("config") is not None
        else '<p class="muted">No run file under PREFIX/runs/: settings unknown.</p>'
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>DiffEdit report: {_e(prefix)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>DiffEdit report</h1>",
        f'<p class="muted">{_e(prefix)} · generated {_e(generated)} · {_e(thumbs_note)}</p>',
        '<section id="summary"><h2>Summary</h2><div class="tiles">',
        _tile("edits", summary.total),
        _tile("ok", summary.ok),
        _tile("failed", summary.failed),
        _tile("duplicates", summary.duplicates),
        *([_tile("filtered candidates", summary.filtered)] if summary.filtered else []),
        _tile("edits/s (wall, all runs)", _number(total_rate)),
        _tile("engine s per edit", _number(per_edit)),
        "</div>",
    ]
    if summary.error_classes:
        parts += ["<h2>Errors by class</h2>", _table(["class", "records"], summary.error_classes.most_common())]
    if summary.classes:
        parts += ['<h2 id="classes">Edits per class</h2>',
                  '<p class="muted">By the class of each edit\'s row (augment.balance_by, else the label column).</p>',
                  _table(["class", "ok", "filtered", "failed"],
                         [[name, counts["ok"], counts["filtered"],
                           sum(counts.values()) - counts["ok"] - counts["filtered"]]
                          for name, counts in sorted(summary.classes.items(), key=lambda item: str(item[0]))])]
    parts += [
        "<h2>Runs</h2>",
        _table(
            ["run", "started", "ok", "not ok", "wall s", "edits/s", "timed by", "settings of its records"],
            [[r["run_id"], r["started_at"], r["ok"], r["failed"], _number(r["seconds"], 4),
              _number(r["edits_per_s"]), r["source"], _settings_of(summary.runs[r["run_id"]])] for r in throughput],
        ),
        "<h3>Settings fingerprints</h3>",
        '<p class="muted">What changes pixels, by fingerprint (from the run files); filter the edits by it below.</p>',
        _table(["settings fingerprint", "records", "settings"],
               [[fingerprint, records, _settings_text(described.get(fingerprint))]
                for fingerprint, records in summary.settings.most_common()]),
        "<h2>Model and settings</h2>",
        _table(["model", "records"], summary.models.most_common()),
        f"<details><summary>Settings</summary>{settings}</details>",
        "</section>",
        *([funnel_section(funnel)] if funnel else []),
        '<section id="metrics"><h2>Metrics</h2><div class="hists">',
        *histograms,
        "</div></section>",
        '<section id="edits"><h2>Edits</h2><div class="controls">',
        '<label>status <select id="status"><option value="all">all</option></select></label>',
        '<label>error class <select id="error_class"><option value="all">all</option></select></label>',
        '<label>settings <select id="settings"><option value="all">all</option></select></label>',
        *(['<label>candidates <select id="fate"><option value="all">all</option></select></label>'] if funnel else []),
        '<label>sort by <select id="sort"><option value="">manifest order</option></select></label>',
        '<select id="dir" aria-label="direction"><option value="asc">ascending</option>'
        '<option value="desc">descending</option></select>',
        '<button id="prev" type="button">◀ prev</button>',
        '<label>page <input id="page" type="number" min="1" value="1" style="width:5em"></label>',
        '<span id="pages"></span><button id="next" type="button">next ▶</button>',
        '<span id="matches" class="muted"></span><span id="problem"></span>',
        "</div>",
        *(['<div id="request" hidden></div>'] if funnel else []),
        '<div id="grid"></div></section>',
        '<script src="data/index.js"></script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)
