"""Histograms of a metric as inline SVG: no script, no external file, readable offline."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

_WIDTH, _HEIGHT, _PAD = 320, 120, 18


def histogram_svg(values: Sequence[float], label: str, bins: int = 24) -> str:
    """An SVG bar chart of the finite ``values`` (NaN = missing), with count, median and range in its caption."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    title = html.escape(label)
    if data.size == 0:
        return f'<figure class="hist"><figcaption>{title}: no values</figcaption></figure>'
    low, high = float(data.min()), float(data.max())
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(data, bins=bins, range=(low, high))
    top = max(int(counts.max()), 1)
    bar_width = (_WIDTH - 2 * _PAD) / bins
    bars = []
    for i, count in enumerate(counts):
        height = (_HEIGHT - 2 * _PAD) * count / top
        x = _PAD + i * bar_width
        y = _HEIGHT - _PAD - height
        tip = f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {count}"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_width - 1, 0.5):.1f}" height="{height:.1f}">'
            f"<title>{tip}</title></rect>"
        )
    axis = (
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" class="axis"/>'
        f'<text x="{_PAD}" y="{_HEIGHT - 4}">{low:.4g}</text>'
        f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 4}" text-anchor="end">{high:.4g}</text>'
        f'<text x="{_PAD}" y="12">{top}</text>'
    )
    caption = f"{title}: {data.size} values, median {float(np.median(data)):.4g}, mean {float(data.mean()):.4g}"
    return (
        f'<figure class="hist"><svg viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
        f'role="img" aria-label="{title} histogram">{"".join(bars)}{axis}</svg>'
        f"<figcaption>{caption}</figcaption></figure>"
    )
