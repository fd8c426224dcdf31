"""Every benchmark runs in its tiny mode and gives well-formed rows; the table and JSON rows.

These check that the suite works, never a timing: `--quick` figures mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, run
from benchmarks.rows import Row, not_built, table

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"name", "value", "unit", "ceiling", "ratio", "target", "met"}


# Each starts its own servers (37 s for all): on demand with `scripts/test -m trial`, like the
# benchmarks themselves (`make bench`); the row and table logic below runs in make test.
@pytest.mark.trial
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_runs_quick_and_writes_rows(name: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", name, "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert rows, "no rows"
    for row in rows:
        assert row.keys() >= KEYS, row
        if row["note"].startswith("not built"):
            assert row["value"] is None and row["met"] is None
            continue
        assert isinstance(row["value"], float | int) and row["value"] > 0, row
        assert isinstance(row["met"], bool) or row["target"].startswith("("), row
        if row["ceiling"] is not None:
            assert row["ratio"] == pytest.approx(row["value"] / row["ceiling"])
    for row in rows:  # the printed table names every row
        assert row["name"] in done.stdout


def test_ratio_and_json_round_trip() -> None:
    row = Row("x", 50.0, "samples/s", ">= 80/s", False, ceiling=100.0, note="n")
    assert row.ratio == 0.5
    data = row.to_json()
    assert data["ratio"] == 0.5 and data.keys() >= KEYS
    assert Row.from_json(json.loads(json.dumps(data))) == row
    assert Row("y", 1.0, "s", "", True).ratio is None  # no ceiling, no ratio


def test_not_built_rows_say_so_and_judge_nothing() -> None:
    row = not_built("replay a week", "s", "< 120 s", "bounded-memory replay")
    assert row.value is None and row.met is None and row.ratio is None
    text = table([row, Row("y", 1234.5, "s", "< 2", False, ceiling=1000.0)])
    assert "not built: bounded-memory replay" in text
    assert "| NO " in text and "1,234" in text and "1.23" in text


def test_a_benchmark_that_does_not_finish_costs_only_its_row() -> None:
    rows = run("rules", quick=True, timeout=0.01)
    assert len(rows) == 1
    assert rows[0].value is None and rows[0].note.startswith("error: no result within")
