"""Small server-rendered SVG trend charts: the page's sparklines and the replay plots.

No plotting library: a trend here is a min/max band per pixel column (so a one-sample spike
is drawn, however many samples share the column), a line through the last values, dashed
horizontal lines at the alarm (red) and clear (green) levels, and a vertical mark with a
triangle at each raise (red) and clear (green). Every element carries a class and `data-*`
attributes (times in epoch seconds, levels as numbers), so tests and scripts read the chart
from the DOM instead of from pixels.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Column(NamedTuple):
    """Values of one time slice: lowest, highest, last."""

    t: float
    low: float
    high: float
    last: float


class ChartMark(NamedTuple):
    ts: float
    kind: str  # "raised" | "cleared"
    label: str = ""
    css: str = ""  # extra class (e.g. "old" for the compared rules of a replay)
    href: str | None = None


@dataclass(slots=True)
class Chart:
    since: float
    until: float
    columns: Sequence[Column]
    alarm: Sequence[float] = ()
    clear: Sequence[float] = ()
    marks: Sequence[ChartMark] = ()
    width: int = 320
    height: int = 70
    title: str = ""
    unit_labels: bool = True  # level numbers at the right edge
    extra: dict[str, str] = field(default_factory=dict)  # more data-* attributes on <svg>
    axis: tuple[str, str] | None = None  # words at the left and right ends of the time axis


def downsample(ts: Sequence[float], values: Sequence[float], since: float, until: float,
               columns: int) -> list[Column]:
    """Min/max/last per pixel column: a long series drawn at the cost of its width, and a
    peak survives. Skips NaN. `ts` ascending."""
    if until <= since or columns < 1:
        return []
    step = (until - since) / columns
    out: list[Column] = []
    cur = -1
    lo = hi = last = 0.0
    for t, v in zip(ts, values, strict=True):
        if v != v:  # NaN: no value
            continue
        c = min(columns - 1, max(0, int((t - since) / step)))
        if c != cur:
            if cur >= 0:
                out.append(Column(since + cur * step, lo, hi, last))
            cur, lo, hi = c, v, v
        lo, hi, last = min(lo, v), max(hi, v), v
    if cur >= 0:
        out.append(Column(since + cur * step, lo, hi, last))
    return out


def _fmt(v: float) -> str:
    return f"{round(v, 3):g}"


def render(chart: Chart) -> str:
    """The chart as one <svg> element (inline in HTML, or alone in a .svg file)."""
    w, h = chart.width, chart.height
    pad_r = 34 if chart.unit_labels else 2
    plot_w, top, bottom = w - pad_r, 4.0, h - 4.0
    values = [v for c in chart.columns for v in (c.low, c.high)]
    values += list(chart.alarm) + list(chart.clear)
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    margin = (vmax - vmin) * 0.08
    vmin, vmax = vmin - margin, vmax + margin
    span = max(chart.until - chart.since, 1e-9)

    def x(t: float) -> float:
        return round((t - chart.since) / span * plot_w, 1)

    def y(v: float) -> float:
        return round(bottom - (v - vmin) / (vmax - vmin) * (bottom - top), 1)

    e = html.escape
    attrs = "".join(f' data-{k}="{e(v)}"' for k, v in chart.extra.items())
    parts = [f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="{e(chart.title)}" '
             f'data-since="{chart.since:.3f}" data-until="{chart.until:.3f}"{attrs}>',
             f"<title>{e(chart.title)}</title>",
             f'<rect class="bg" x="0" y="0" width="{plot_w}" height="{h}" fill="#fafafa" '
             'stroke="#ccc"/>']
    if chart.columns:
        band = " ".join(f"M{x(c.t)},{y(c.high)}V{y(c.low) + 0.6}" for c in chart.columns)
        parts.append(f'<path class="band" d="{band}" stroke="#90a4ae" stroke-width="1.6" '
                     'fill="none"/>')
        line = " ".join(f"{x(c.t)},{y(c.last)}" for c in chart.columns)
        parts.append(f'<polyline class="value" points="{line}" fill="none" stroke="#1565c0" '
                     'stroke-width="1.6"/>')
        end = chart.columns[-1]  # the newest value, visible even when it is the only one
        parts.append(f'<circle class="last" cx="{x(end.t)}" cy="{y(end.last)}" r="3" '
                     'fill="#1565c0"/>')
    else:
        parts.append(f'<text class="empty" x="{plot_w / 2}" y="{h / 2 + 4}" font-size="12" '
                     'text-anchor="middle" fill="#777">no samples in this window</text>')
    for cls, levels, color in (("alarm-level", chart.alarm, "#c62828"),
                               ("clear-level", chart.clear, "#2e7d32")):
        for v in levels:
            parts.append(f'<line class="{cls}" data-level="{_fmt(v)}" x1="0" x2="{plot_w}" '
                         f'y1="{y(v)}" y2="{y(v)}" stroke="{color}" stroke-width="1.4" '
                         'stroke-dasharray="5 3"/>')
            if chart.unit_labels:
                parts.append(f'<text x="{plot_w + 2}" y="{y(v) + 4}" font-size="11" '
                             f'fill="{color}">{_fmt(v)}</text>')
    for m in chart.marks:
        if not chart.since <= m.ts <= chart.until:
            continue
        mx = x(m.ts)
        color = "#c62828" if m.kind == "raised" else "#2e7d32"
        tip = (f"M{mx - 5},{top} L{mx + 5},{top} L{mx},{top + 8} Z" if m.kind == "raised"
               else f"M{mx - 5},{bottom} L{mx + 5},{bottom} L{mx},{bottom - 8} Z")
        body = (f'<g class="mark {e(m.kind)} {e(m.css)}" data-ts="{m.ts:.3f}" '
                f'data-kind="{e(m.kind)}"><title>{e(m.label or m.kind)}</title>'
                f'<line x1="{mx}" x2="{mx}" y1="{top}" y2="{bottom}" stroke="{color}" '
                f'stroke-width="1.5"/><path d="{tip}" fill="{color}"/></g>')
        parts.append(f'<a href="{e(m.href)}">{body}</a>' if m.href else body)
    if chart.axis:
        for anchor, ax, words in (("start", 3, chart.axis[0]), ("end", plot_w - 3, chart.axis[1])):
            parts.append(f'<text class="axis" x="{ax}" y="{h - 6}" font-size="10" fill="#777" '
                         'stroke="#fafafa" stroke-width="3" paint-order="stroke" '
                         f'text-anchor="{anchor}">{e(words)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_span(seconds: float) -> str:
    """A window as words for a chart's caption: 30 min, 2.5 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if math.isfinite(seconds) else "-"
