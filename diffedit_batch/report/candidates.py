"""The report's view of candidates (`candidates.count` > 1): each candidate's fate, and the survival funnel.

A candidate record has a `candidate` index; its request is its id less the `~c<index>` suffix. Its fate is
"kept" (status ok), "failed (error)", or the group of its `filter_reason`: the floor or ceiling that removed it,
named by the score ("below min clip_directional", "above max mask_coverage", "could not compute clip_directional"),
or "ranked below keep". The funnel counts candidates by fate as the records stream by (counters only); the page
groups a request's candidates in the browser, from an index column of request keys (a 31-bit hash of the request
id, 4 bytes a record here) and the row chunks it loads, so no pass holds every record.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import Counter
from dataclasses import dataclass, field

from diffedit_batch.data.records import request_id_of
from diffedit_batch.data.status import Status

KEPT = "kept"
FAILED = "failed (error)"
RANKED_OUT = "ranked below keep"
OTHER = "filtered (other reason)"
MAX_FATES = 50  # distinct fates counted; the rest are counted as OTHER (a capped counter)

# The reasons `recipe.candidates.select_candidates` writes, by the score they name.
_REASONS = [
    (re.compile(r"(\w+) \S+ < min \S+"), "below min {}"),
    (re.compile(r"(\w+) \S+ > max \S+"), "above max {}"),
    (re.compile(r"(\w+) could not be computed \((?:floor|ceiling) \S+\)"), "could not compute {}"),
]


def is_candidate(record: dict) -> bool:
    return record.get("candidate") is not None


def request_key(record: dict) -> int:
    """A candidate's request as a 31-bit number (equal for a request's candidates; rare collisions are told apart
    by id in the page); -1 for a record that is no candidate."""
    if not is_candidate(record):
        return -1
    request = request_id_of(record.get("id"), record["candidate"]) or ""
    digest = hashlib.blake2b(request.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def fate_of(record: dict) -> str | None:
    """What became of a candidate record (see the module's docstring); None for a record that is no candidate."""
    if not is_candidate(record):
        return None
    status = record.get("status")
    if status == Status.OK:
        return KEPT
    if status != Status.FILTERED:
        return FAILED
    reason = (record.get("filter_reason") or "").strip()
    if reason.startswith("ranked below keep"):
        return RANKED_OUT
    for pattern, name in _REASONS:
        match = pattern.fullmatch(reason)
        if match:
            return name.format(match.group(1))
    return OTHER


@dataclass
class Funnel:
    """Candidates counted by fate: how many were generated, what removed the others, how many were kept."""

    generated: int = 0
    requests: int = 0  # candidate 0 of each request
    fates: Counter = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        fate = fate_of(record)
        if fate is None:
            return
        self.generated += 1
        if record["candidate"] == 0:
            self.requests += 1
        if fate not in self.fates and len(self.fates) >= MAX_FATES:
            fate = OTHER
        self.fates[fate] += 1

    def steps(self) -> list[tuple[str, int, int]]:
        """(step, candidates it removed or kept, candidates left after it), in the funnel's order: errors, the
        floors and ceilings (most removed first), other reasons, ranked below keep, kept."""
        removals = sorted(((name, n) for name, n in self.fates.items() if name not in (KEPT, FAILED, RANKED_OUT,
                                                                                       OTHER)),
                          key=lambda item: (-item[1], item[0]))
        ordered = [(FAILED, self.fates[FAILED])] if self.fates[FAILED] else []
        ordered += removals
        ordered += [(name, self.fates[name]) for name in (OTHER, RANKED_OUT) if self.fates[name]]
        left = self.generated
        steps = []
        for name, count in ordered:
            left -= count
            steps.append((name, count, left))
        steps.append((KEPT, self.fates[KEPT], self.fates[KEPT]))
        return steps


def _bar(count: int, total: int) -> str:
    width = 0.0 if not total else 100.0 * count / total
    return (f'<div class="bar"><span style="width:{width:.1f}%"></span></div>'
            f'<span class="muted">{width:.1f} %</span>')


def funnel_section(funnel: Funnel) -> str:
    """The funnel as an HTML section: a row per step, each a link that filters the grid to its candidates."""
    e = html.escape
    rows = [f"<tr><td>generated</td><td>{funnel.generated}</td><td>{_bar(funnel.generated, funnel.generated)}</td>"
            f"<td>{funnel.generated}</td></tr>"]
    for name, count, left in funnel.steps():
        step = e(name) if name == KEPT else f"removed: {e(name)}"
        link = f'<a href="#fate={e(name.replace(" ", "+"))}">{step}</a>'
        rows.append(f'<tr class="fate"><td>{link}</td><td>{count}</td><td>{_bar(count, funnel.generated)}</td>'
                    f"<td>{left}</td></tr>")
    per_request = funnel.generated / funnel.requests if funnel.requests else None
    note = (f"{funnel.requests} requests, {per_request:.3g} candidates each. " if per_request else "")
    return (
        '<section id="candidates"><h2>Candidates</h2>'
        f'<p class="muted">{note}A candidate is removed by the first floor or ceiling it misses (in the order the '
        "scores are checked), then the passing ones below <code>candidates.keep</code> are ranked out. Open a "
        "candidate's request from its card to see its candidates side by side.</p>"
        '<table class="funnel"><thead><tr><th>step</th><th>candidates</th><th>of generated</th><th>left</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )
