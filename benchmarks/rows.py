"""One row of the benchmark table, and what every benchmark module shares to produce rows.

A benchmark is a function `(quick: bool) -> list[Row]`. It measures our figure and, in the same
run, the ceiling: the bare library doing the same I/O with no gateway logic. It never asserts a
timing: a row says whether its target was met, and the table is for people to read.
"""

from __future__ import annotations

import resource
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rules import RuleSet, load_rule_files


@dataclass(slots=True)
class Row:
    """One figure. `met` is None when there is no figure to judge (not built, or failed)."""

    name: str
    value: float | None
    unit: str
    target: str
    met: bool | None
    ceiling: float | None = None
    note: str = ""
    peak_rss_mb: float | None = None

    @property
    def ratio(self) -> float | None:
        """Our figure over the ceiling's (same unit), when both exist."""
        if self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        data = {k: v for k, v in data.items() if k != "ratio"}
        return cls(**data)


def not_built(name: str, unit: str, target: str, why: str) -> Row:
    """A row for a feature that does not exist yet: said plainly, never a made-up figure."""
    return Row(name, None, unit, target, None, note=f"not built: {why}")


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rules_from_text(text: str) -> RuleSet:
    """A rule set from TOML text (the loader reads files)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(text)
        return load_rule_files([path])


def fmt(value: float | None) -> str:
    """A figure for the table: thousands separated, few digits."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: list[Row]) -> str:
    """The one table the suite prints (Markdown, so it pastes into an issue)."""
    head = ("benchmark", "ours", "unit", "ceiling", "ratio", "target", "met", "peak RSS MB",
            "note")
    lines = [[r.name, fmt(r.value), r.unit, fmt(r.ceiling),
              "—" if r.ratio is None else f"{r.ratio:.2f}", r.target,
              "—" if r.met is None else ("yes" if r.met else "NO"),
              fmt(r.peak_rss_mb), r.note] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
            for line in lines]
    return "\n".join(out)
