"""`replay --plot`: the plot's raise/clear markers sit at the golden transitions' times.

The file is parsed (the SVG carries data-ts / data-kind on every mark), not compared by pixels.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from gateway.cli import main

CASES = Path(__file__).resolve().parents[1] / "rules" / "cases"
MARK = re.compile(r'<g class="mark (raised|cleared) (current|old)" data-ts="([\d.]+)"')


def _expected(case: Path) -> set[tuple[str, float]]:
    lines = case.joinpath("expected.jsonl").read_text().splitlines()
    return {(d["kind"], round(float(d["ts"]), 3)) for d in map(orjson.loads, lines) if d}


def _marks(text: str, which: str) -> set[tuple[str, float]]:
    return {(k, round(float(ts), 3)) for k, w, ts in MARK.findall(text) if w == which}


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_markers_at_the_golden_transitions(case: str, suffix: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = CASES / case
    out = tmp_path / f"plot{suffix}"
    assert main(["replay", "--rules", str(folder / "rules.toml"), "--input",
                 str(folder / "input.jsonl"), "--plot", str(out)]) == 0
    text = out.read_text()
    expected = _expected(folder)
    assert _marks(text, "current") == expected
    if expected:
        assert '<polyline class="value"' in text
    assert "plotted" in capsys.readouterr().err


def test_compare_draws_old_and_current_one_above_the_other(tmp_path: Path) -> None:
    folder = CASES / "threshold-above"
    old = tmp_path / "old.toml"
    # The old rule had no on-delay: the brief crossing at 1001 raised it.
    old.write_text(folder.joinpath("rules.toml").read_text()
                   .replace("on_delay_seconds = 2", "on_delay_seconds = 0"))
    out = tmp_path / "plot.html"
    assert main(["replay", "--rules", str(folder / "rules.toml"), "--compare", str(old),
                 "--input", str(folder / "input.jsonl"), "--plot", str(out)]) == 0
    text = out.read_text()
    assert _marks(text, "current") == _expected(folder)
    old_marks = _marks(text, "old")
    assert ("raised", 1001.0) in old_marks and old_marks != _marks(text, "current")
    # current above old, for the same rule
    assert text.index('data-rules="current rules"') < text.index('data-rules="old rules"')
    assert 'class="alarm-level" data-level="7.1"' in text


def test_asset_names_what_is_drawn_and_nothing_raised_says_so(tmp_path: Path) -> None:
    folder = CASES / "threshold-above"
    out = tmp_path / "plot.html"
    assert main(["replay", "--rules", str(folder / "rules.toml"), "--input",
                 str(folder / "input.jsonl"), "--plot", str(out), "--asset", "nope"]) == 0
    assert "No rule raised" in out.read_text()


def test_many_signals_sorted_once_give_the_same_columns() -> None:
    import numpy as np

    from gateway.plot import SignalIndex, columns_of
    from rules.columns import Columns

    keys = tuple((f"a{i}", "v") for i in range(5))
    key = np.array([0, 1, 2, 0, 1, 2, 3, 0, 4, 0], np.uint32)
    ts = np.arange(10, dtype=np.float64)
    value = np.array([1, 2, 3, 9, 5, 6, 7, 4, np.nan, 2], np.float64)
    cols = Columns(keys, key, ts, value, np.zeros(10, np.uint8))
    few, many = SignalIndex(cols, 1), SignalIndex(cols, 100)
    assert few.order is None and many.order is not None
    for asset, _ in keys:
        assert columns_of(few, asset, "v", 0, 10, 5) == columns_of(many, asset, "v", 0, 10, 5)
    got = columns_of(many, "a0", "v", 0, 10, 5)  # a0: 1@0 9@3 4@7 2@9
    assert [(c.low, c.high, c.last) for c in got] == [(1, 1, 1), (9, 9, 9), (4, 4, 4),
                                                      (2, 2, 2)]
    assert columns_of(many, "a4", "v", 0, 10, 5) == []  # only a NaN


def test_a_day_of_a_thousand_signals_plots_only_what_raised(tmp_path: Path) -> None:
    """1,000 pumps, one sample each 10 s for a day (8.6 M samples); ten of them spike."""
    import time

    import numpy as np

    from gateway.plot import write_plot
    from rules.columns import Columns
    from rules.fastreplay import replay_columns
    from rules.loader import load_rule_files

    n_sig, n_t, t0 = 1000, 8640, 1.7e9
    keys = tuple((f"pump-{i}", "vibration") for i in range(n_sig))
    ts = np.repeat(np.arange(n_t, dtype=np.float64) * 10 + t0, n_sig)
    key = np.tile(np.arange(n_sig, dtype=np.uint32), n_t)
    value = np.random.default_rng(1).normal(3.0, 0.5, n_sig * n_t)
    spiking = (key % 100 == 0) & (ts > t0 + 40_000) & (ts < t0 + 40_300)
    value[spiking] = 9.0
    cols = Columns(keys, key, ts, value, np.zeros(n_sig * n_t, np.uint8))
    rules_file = tmp_path / "r.toml"
    rules_file.write_text(CASES.joinpath("threshold-above", "rules.toml").read_text()
                          .replace('asset = "p1"', 'asset_pattern = "pump-*"'))
    rules = load_rule_files([rules_file])
    result = replay_columns(rules, cols)
    start = time.perf_counter()
    drawn = write_plot(tmp_path / "day.html", cols, result, rules)
    took = time.perf_counter() - start
    assert drawn == 10
    assert took < 5.0, f"plot took {took:.2f} s"  # 0.24 s unloaded
    print(f"plotted {drawn} of {n_sig} signals ({len(cols):,} samples) in {took:.2f} s, "
          f"{(tmp_path / 'day.html').stat().st_size // 1024} KiB")
