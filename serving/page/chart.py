"""The deal view's chart: win probability over time as inline SVG, drawn on the server.

Why SVG text from Python: the page needs no JavaScript library and no build step, the chart is in
the HTML the first request returns (the page's content security policy allows no script at all),
and it scales with the window through its ``viewBox``. Each point carries a ``<title>`` (its date
and value) and the chart a ``<title>``/``<desc>`` pair for screen readers; the page also lists the
same history as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import pandas as pd


@dataclass(frozen=True)
class ChartBox:
    """Size of the drawing (SVG user units) and its margins for the axis labels."""

    width: float = 640.0
    height: float = 220.0
    left: float = 44.0
    right: float = 20.0
    top: float = 14.0
    bottom: float = 30.0


Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Dates written under the x axis: every point up to this many, else the first, middle and last.
MAX_X_LABELS = 6


def chart_summary(times: list[pd.Timestamp], values: list[float]) -> str:
    """One sentence saying what the chart shows (its ``<desc>``).

    >>> t = [pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-06-30", tz="UTC")]
    >>> chart_summary(t, [0.42, 0.31])
    'Win probability from 42% on 2026-05-01 to 31% on 2026-06-30 over 2 scores.'
    >>> chart_summary(t[:1], [0.42])
    'Win probability 42% on 2026-05-01 (one score so far).'
    """
    if not values:
        return "No score stored."
    if len(values) == 1:
        return f"Win probability {values[0]:.0%} on {times[0]:%Y-%m-%d} (one score so far)."
    return (f"Win probability from {values[0]:.0%} on {times[0]:%Y-%m-%d} to {values[-1]:.0%} on "
            f"{times[-1]:%Y-%m-%d} over {len(values)} scores.")


def history_chart(times, values, title: str = "Win probability over time", box: ChartBox = ChartBox()) -> str:
    """SVG text of a line through ``values`` (probabilities, 0-1) at ``times`` (UTC timestamps, ascending).

    The y axis always runs from 0% to 100%, so two deals' charts read alike; the x axis spans the
    first to the last score (one score: a single dot in the middle).

    >>> svg = history_chart([pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-06-01", tz="UTC")], [0.2, 0.6])
    >>> svg.startswith("<svg") and svg.count("<circle") == 2 and "<polyline" in svg
    True
    """
    times = [pd.Timestamp(t) for t in times]
    values = [float(v) for v in values]
    if len(times) != len(values):
        raise ValueError(f"history_chart: {len(times)} times for {len(values)} values")
    plot_w = box.width - box.left - box.right
    plot_h = box.height - box.top - box.bottom

    def y_of(p: float) -> float:
        return box.top + plot_h * (1.0 - min(max(p, 0.0), 1.0))

    if len(times) > 1 and times[-1] > times[0]:
        span = (times[-1] - times[0]).total_seconds()
        xs = [box.left + plot_w * (t - times[0]).total_seconds() / span for t in times]
    else:
        xs = [box.left + plot_w / 2.0] * len(times)
    ys = [y_of(v) for v in values]
    parts = [
        (f'<svg class="chart" viewBox="0 0 {box.width:g} {box.height:g}" role="img" '
         'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">'),
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(chart_summary(times, values))}</desc>',
    ]
    for tick in Y_TICKS:
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{box.left:g}" x2="{box.width - box.right:g}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{box.left - 6:g}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    labelled = range(len(times)) if len(times) <= MAX_X_LABELS else sorted({0, len(times) // 2, len(times) - 1})
    for k in labelled:
        anchor = "start" if xs[k] <= box.left + 1 and len(times) > 1 else (
            "end" if xs[k] >= box.width - box.right - 1 and len(times) > 1 else "middle")
        parts.append(f'<text class="axis" x="{xs[k]:.1f}" y="{box.height - 8:g}" text-anchor="{anchor}">'
                     f'{times[k]:%Y-%m-%d}</text>')
    if len(xs) > 1:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        parts.append(f'<polyline class="line" points="{points}"/>')
    for t, v, x, y in zip(times, values, xs, ys):
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4"><title>{t:%Y-%m-%d %H:%M} UTC: '
                     f'{v:.0%}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
