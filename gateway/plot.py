"""`plantbridge replay ... --plot FILE.html|FILE.svg`: what the rules did, as pictures.

For each rule that raised on an asset (in the current or, with `--compare`, the old rules) or
each rule of an asset named with `--asset`: its signal over the recording, its alarm and clear
levels, and its raises and clears; with `--compare`, the current rules' chart and the old
rules' chart one above the other, on the same time axis, so a technician sees what a change
does. Only those rules are drawn, never every signal of the recording, and each signal is
reduced to min/max/last per pixel column with array operations: a day of 1,000 signals costs
the reading of the few plotted ones.

Markers carry `data-ts` (epoch seconds) and `data-kind`, so a test or a script reads the
plot's events from the file (gateway/svg.py). No plotting library: the same SVG as the page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.page_model import levels_of
from gateway.svg import Chart, ChartMark, Column, render
from rules.build import RuleSet
from rules.columns import NO_VALUE, QUALITY_MASK, Columns
from rules.replay import ReplayResult

PLOT_WIDTH = 1000  # pixel columns per chart
PLOT_HEIGHT = 150


@dataclass(frozen=True, slots=True)
class Panel:
    """One rule on one asset: what to draw of one rule set."""

    label: str  # "current rules" | "old rules"
    rule_id: str
    asset: str
    signal: str
    alarm: list[float]
    clear: list[float]
    marks: list[ChartMark]


def _signal_of(rules: RuleSet, rule_id: str, asset: str) -> tuple[str, dict[str, list[float]]]:
    d = rules.get(rule_id)
    if d is None:
        return "", {}
    inst = d.build(asset)
    return inst.signal, levels_of(inst)


def panels(result: ReplayResult, rules: RuleSet, label: str,
           assets: Iterable[str] = ()) -> dict[tuple[str, str], Panel]:
    """(rule_id, asset) -> its panel, for every rule that raised, and every rule of `assets`."""
    wanted = set(assets)
    keys: dict[tuple[str, str], list[ChartMark]] = {}
    for t in result.transitions:
        if t.asset in wanted or not wanted:
            kind = str(t.kind)
            keys.setdefault((t.rule_id, t.asset), []).append(
                ChartMark(t.ts, kind, f"{kind} at {t.ts:.3f}: {t.reason}",
                          css="old" if label == "old rules" else "current"))
    for d in rules.rules:
        for asset in wanted:
            if d.matches(asset):
                keys.setdefault((d.rule_id, asset), [])
    out = {}
    for (rule_id, asset), marks in keys.items():
        signal, levels = _signal_of(rules, rule_id, asset)
        if signal:
            out[(rule_id, asset)] = Panel(label, rule_id, asset, signal,
                                          levels.get("alarm", []), levels.get("clear", []),
                                          marks)
    return out


class SignalIndex:
    """Positions of each signal's samples. For a few signals, one scan of the key column each
    (30 ms on 8.6 million samples); for many, one sort of it (0.8 s) and a slice each."""

    SORT_ABOVE = 24  # signals to look up

    def __init__(self, cols: Columns, lookups: int) -> None:
        self.cols = cols
        self.index = {k: i for i, k in enumerate(cols.keys)}
        self.order: npt.NDArray[np.intp] | None = None
        if lookups > self.SORT_ABOVE:
            self.order = np.argsort(cols.key, kind="stable")  # recorded order within a key
            self.bounds = np.searchsorted(cols.key[self.order], np.arange(len(cols.keys) + 1))

    def positions(self, asset: str, signal: str) -> npt.NDArray[np.intp]:
        k = self.index.get((asset, signal))
        if k is None:
            return np.empty(0, np.intp)
        if self.order is None:
            return np.flatnonzero(self.cols.key == k)
        return self.order[self.bounds[k]:self.bounds[k + 1]]


def columns_of(signals: SignalIndex, asset: str, signal: str, since: float, until: float,
               width: int = PLOT_WIDTH) -> list[Column]:
    """Min/max/last per pixel column of one signal (good and uncertain values only)."""
    cols = signals.cols
    at = signals.positions(asset, signal)
    q = cols.quality[at]
    ts, v = cols.ts[at], cols.value[at]
    keep = ((q & NO_VALUE) == 0) & ((q & QUALITY_MASK) != 2) & np.isfinite(v)
    ts, v = ts[keep], v[keep]
    if not len(ts) or until <= since:
        return []
    order = np.argsort(ts, kind="stable")
    ts, v = ts[order], v[order]
    step = (until - since) / width
    idx: npt.NDArray[np.int64] = np.clip(((ts - since) / step).astype(np.int64), 0, width - 1)
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    ends = np.r_[starts[1:], len(idx)] - 1
    lo = np.minimum.reduceat(v, starts)
    hi = np.maximum.reduceat(v, starts)
    return [Column(since + int(c) * step, float(a), float(b), float(c2))
            for c, a, b, c2 in zip(idx[starts], lo, hi, v[ends], strict=True)]


def _chart(panel: Panel, signals: SignalIndex, since: float, until: float) -> str:
    return render(Chart(since, until,
                        columns_of(signals, panel.asset, panel.signal, since, until),
                        panel.alarm, panel.clear, panel.marks, PLOT_WIDTH + 40, PLOT_HEIGHT,
                        title=f"{panel.rule_id} on {panel.asset} ({panel.label})",
                        extra={"rule": panel.rule_id, "asset": panel.asset,
                               "rules": panel.label},
                        axis=(_iso(since), _iso(until))))


def _iso(ts: float) -> str:
    from gateway.messages import iso_time

    return iso_time(ts)


def write_plot(path: Path, cols: Columns, current: ReplayResult, rules: RuleSet,
               old: tuple[ReplayResult, RuleSet] | None = None,
               assets: Sequence[str] = ()) -> int:
    """Write the plot (HTML or, for a .svg name, one SVG); returns the number of rules drawn."""
    if not len(cols):
        since = until = 0.0
    else:
        since, until = float(np.min(cols.ts)), float(np.max(cols.ts))
        until = until if until > since else since + 1.0
    new_p = panels(current, rules, "current rules", assets)
    old_p = panels(old[0], old[1], "old rules", assets) if old is not None else {}
    keys = sorted(set(new_p) | set(old_p), key=lambda k: (k[1], k[0]))
    blocks: list[tuple[str, list[str]]] = []
    signals = SignalIndex(cols, len(keys))
    for key in keys:
        charts = [_chart(p, signals, since, until) for p in (new_p.get(key), old_p.get(key))
                  if p is not None]
        blocks.append((f"{key[0]} on {key[1]}", charts))
    if path.suffix.lower() == ".svg":
        path.write_text(_svg_document(blocks), encoding="utf-8")
    else:
        path.write_text(_html_document(blocks, compare=old is not None), encoding="utf-8")
    return len(keys)


def _html_document(blocks: list[tuple[str, list[str]]], *, compare: bool) -> str:
    e = html.escape
    body = "".join(f'<section class="rule"><h2>{e(title)}</h2>{"".join(charts)}</section>'
                   for title, charts in blocks) or "<p>No rule raised in this recording.</p>"
    note = ("Each rule: the current rules above, the old rules (--compare) below. "
            if compare else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>PlantBridge replay</title>
<style>body{{font-family:sans-serif;margin:1em}} h2{{font-size:1.05em;margin:1em 0 .2em}}
svg.trend{{display:block;margin:.2em 0;max-width:100%;height:auto}}</style></head><body>
<h1>Replay</h1><p>{note}Red dashed: alarm level; green dashed: clear level; red mark: raise;
green mark: clear. Values are min/max per pixel column.</p>{body}</body></html>"""


def _svg_document(blocks: list[tuple[str, list[str]]]) -> str:
    """All charts stacked in one SVG, each under its title."""
    e = html.escape
    parts, y = [], 0
    for title, charts in blocks:
        parts.append(f'<text x="4" y="{y + 16}" font-size="14" font-family="sans-serif">'
                     f"{e(title)}</text>")
        y += 22
        for chart in charts:
            parts.append(f'<g transform="translate(0,{y})">{chart}</g>')
            y += PLOT_HEIGHT + 8
    height = max(y, 30)
    if not blocks:
        parts.append('<text x="4" y="20" font-family="sans-serif">No rule raised in this '
                     "recording.</text>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH + 40}" '
            f'height="{height}">{"".join(parts)}</svg>\n')
