"""The fast replay gives exactly what the reference replay gives, transition for transition.

`rules.fastreplay` feeds each rule instance only the events that can change it; the reference
`rules.replay.replay` feeds every sample and tick to the engine. Random recordings (ties,
gaps longer than the stale limit, time that goes backwards, bad and missing values, NaN and
infinities, muting that toggles) are replayed both ways over rules of every kind with and
without delays; the results must be equal in every field, including the order.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Quality, Sample, Transition
from rules import RuleSet, load_rule_files, replaydata
from rules.columns import Columns, columns_from_samples
from rules.fastreplay import replay_columns
from rules.pbrec import write_columns
from rules.replay import ReplayResult, load_recording, replay
from rules.replaydata import ByKey
from rules.slabreplay import replay_recording, replay_slabs

CASES = Path(__file__).parent / "cases"

KINDS = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "p*"
signal = "vibration"
above = 7.0
clear_below = 6.0
on_delay_seconds = {on}
off_delay_seconds = {off}
suppress_while = {{ signal = "mode", equals = 1 }}

[[rule]]
id = "vib-low"
kind = "threshold"
asset = "p1"
signal = "vibration"
below = 2.0
clear_above = 3.0
off_delay_seconds = {on}

[[rule]]
id = "vib-spikes"
kind = "threshold"
assets = ["p1", "p2"]
signal = "vibration"
outside = [1.0, 9.0]
clear_inside = [2.0, 8.0]
count = 2
of_last_samples = {m}
on_delay_seconds = {off}
suppress_while = {{ signal = "mode", equals = 1 }}

[[rule]]
id = "temp-band"
kind = "threshold"
asset_pattern = "*"
signal = "temperature"
inside = [40.0, 60.0]
clear_outside = [35.0, 65.0]
on_delay_seconds = {off}
off_delay_seconds = {on}
suppress_while = [{{ signal = "mode", equals = 2 }}, {{ signal = "running", equals = 0 }}]

[[rule]]
id = "temp-rate"
kind = "rate"
asset_pattern = "p*"
signal = "temperature"
window_seconds = {window}
above = 20
clear_below = 5
off_delay_seconds = {off}

[[rule]]
id = "temp-fall"
kind = "rate"
asset = "p2"
signal = "temperature"
window_seconds = 3
below = -10
on_delay_seconds = {on}
suppress_while = {{ signal = "temperature", equals = 50 }}

[[rule]]
id = "silent"
kind = "stale"
assets = ["p1", "p3"]
signal = "vibration"
limit_seconds = {limit}

[[rule]]
id = "silent-muted"
kind = "stale"
asset_pattern = "p*"
signal = "temperature"
limit_seconds = {limit}
suppress_while = {{ signal = "mode", equals = 1 }}

[[rule]]
id = "bad"
kind = "bad_quality"
asset_pattern = "p*"
signal = "temperature"
limit_seconds = {on}
off_delay_seconds = {off}

[[rule]]
id = "vib-running"
kind = "combination"
asset_pattern = "p*"
all_of = [{{ signal = "vibration", above = 5.0 }}, {{ signal = "running", equals = 1 }}]
max_age_seconds = {age}
on_delay_seconds = {on}
off_delay_seconds = {off}
suppress_while = [{{ signal = "mode", equals = 1 }}, {{ signal = "running", equals = 2 }}]

[[rule]]
id = "hot-or-racing"
kind = "combination"
asset_pattern = "p*"
any_of = [{{ signal = "temperature", above = 60.0 }}, {{ signal = "running", equals = 2 }}]
max_age_seconds = {age}
on_delay_seconds = {off}
suppress_while = {{ signal = "running", equals = 0 }}

[[rule]]
id = "mode-high"
kind = "threshold"
asset = "p2"
signal = "mode"
above = 1.5
clear_below = 0.5
on_delay_seconds = {on}
suppress_while = {{ signal = "mode", equals = 2 }}

[[rule]]
id = "any-trouble"
kind = "combination"
asset = "p1"
any_of = [{{ signal = "temperature", above = 70.0 }}, {{ signal = "vibration", below = 1.0 }},
          {{ signal = "vibration", above = 10.0 }}]
max_age_seconds = {age}
off_delay_seconds = {on}
"""

DELAYS = [0.0, 0.0, 0.5, 1.0, 2.0, 3.5]


@functools.lru_cache(maxsize=256)
def load_text(text: str) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.toml"
        path.write_text(text)
        return load_rule_files([path])


def rule_set(on: float, off: float, m: int, window: float, limit: float, age: float) -> RuleSet:
    return load_text(KINDS.format(on=on, off=off, m=m, window=window, limit=limit, age=age))


values = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 6.0, 6.5, 7.0, 7.5, 9.5, 11.0, 37.0,
                     50.0, 62.0, 75.0]),
    st.floats(-5.0, 90.0),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.none(),
)
steps = st.one_of(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 1.5]), st.floats(0.0, 3.0),
                  st.sampled_from([9.0, 25.0, -0.5, -3.0]))
rows = st.lists(st.tuples(
    steps,
    st.sampled_from(["p1", "p1", "p2", "p3", "f9"]),
    st.sampled_from(["vibration", "vibration", "temperature", "temperature", "running", "mode"]),
    values,
    st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]),
), min_size=0, max_size=150)


def make_samples(data: Sequence[tuple[float, str, str, float | None, Quality]]) -> list[Sample]:
    out, ts = [], 1000.0
    for dt, asset, signal, value, q in data:
        ts += dt
        if signal in ("running", "mode") and value is not None and math.isfinite(value):
            value = float(round(value) % 3)  # mostly 0, 1 and 2: the muting toggles
        out.append(Sample(asset, signal, value, q, ts))
    return out


def comparable(t: Transition) -> Transition:
    """NaN never equals NaN unless it is the same object; a fast replay builds its own."""
    if t.value is not None and math.isnan(t.value):
        return dataclasses.replace(t, value=None)
    return t


def same(a: ReplayResult, b: ReplayResult) -> None:
    assert [comparable(t) for t in b.transitions] == [comparable(t) for t in a.transitions]
    assert sum(t.value is None for t in b.transitions) == sum(t.value is None
                                                               for t in a.transitions)
    assert (b.samples, b.skipped, b.first_ts, b.last_ts) == (a.samples, a.skipped, a.first_ts,
                                                              a.last_ts)


@settings(max_examples=400, deadline=None)
@given(data=rows, on=st.sampled_from(DELAYS), off=st.sampled_from(DELAYS),
       m=st.integers(2, 5), window=st.sampled_from([2.0, 5.0, 30.0]),
       limit=st.sampled_from([1.0, 4.0, 20.0]), age=st.sampled_from([1.5, 4.0, 60.0]),
       tick=st.sampled_from([1.0, 1.0, 0.3, 2.5]))
def test_fast_replay_equals_the_reference(data: list[tuple[float, str, str, float | None,
                                                           Quality]],
                                          on: float, off: float, m: int, window: float,
                                          limit: float, age: float, tick: float) -> None:
    rules = rule_set(on, off, m, window, limit, age)
    samples = make_samples(data)
    same(replay(rules, samples, tick), replay_columns(rules, columns_from_samples(samples), tick))


def steady(seconds: int, asset: str = "p1") -> list[Sample]:
    """Long quiet runs with a few excursions: where the fast replay skips most."""
    out = []
    for t in range(seconds):
        vib = 8.0 if 100 <= t % 400 < 160 else 2.5 + (t % 7) / 10
        temp = 45.0 + (t % 400) / 10 if t % 1000 > 600 else 45.0
        out.append(Sample(asset, "vibration", vib, Quality.GOOD, 1e9 + t))
        if t % 900 not in range(300, 340):  # a silent temperature sensor now and then
            out.append(Sample(asset, "temperature", temp, Quality.GOOD, 1e9 + t))
        out.append(Sample(asset, "running", 1.0 if t % 2000 < 1800 else 0.0, Quality.GOOD,
                          1e9 + t))
    return out


@pytest.mark.parametrize("delays", [(0.0, 0.0), (2.0, 3.5), (30.0, 0.5)])
def test_long_quiet_recording(delays: tuple[float, float]) -> None:
    on, off = delays
    rules = rule_set(on, off, 3, 30.0, 20.0, 4.0)
    samples = steady(5000)
    expected = replay(rules, samples)
    assert len(expected.transitions) > 20  # the data does something
    same(expected, replay_columns(rules, columns_from_samples(samples)))


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.iterdir()
                                        if (p / "rules.toml").is_file()))
def test_golden_cases(name: str) -> None:
    rules = load_rule_files([CASES / name / "rules.toml"])
    samples = list(load_recording(CASES / name / "input.jsonl"))
    same(replay(rules, samples), replay_columns(rules, columns_from_samples(samples)))


def test_empty_and_all_skipped() -> None:
    rules = rule_set(1.0, 1.0, 3, 5.0, 4.0, 4.0)
    for samples in ([], [Sample("p1", "vibration", math.nan, Quality.GOOD, 5.0)]):
        same(replay(rules, samples), replay_columns(rules, columns_from_samples(samples)))


def test_recording_longer_than_one_sort_chunk() -> None:
    """Positions per signal are sorted in chunks of 65,536 samples; across chunks too."""
    samples = [s for asset in ("p1", "p2", "p3", "p4") for s in steady(6000, asset)]
    samples.sort(key=lambda s: s.source_ts)  # interleaved, 72,000 samples
    samples += steady(2000, "p2")[::-1]  # then time runs backwards for a while
    cols = columns_from_samples(samples)
    assert len(cols) > 65_536  # more than one chunk
    rules = rule_set(2.0, 3.5, 3, 30.0, 20.0, 4.0)
    expected = replay(rules, samples)
    assert len(expected.transitions) > 50
    same(expected, replay_columns(rules, cols))
    by_key = ByKey(cols.key, len(cols.keys))
    order = np.argsort(cols.key, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(cols.key, minlength=len(cols.keys)))))
    for k in range(len(cols.keys)):
        assert np.array_equal(by_key.positions(k), order[bounds[k]:bounds[k + 1]])
        assert by_key.first(k) == order[bounds[k]]


def random_recording(seed: int) -> tuple[list[Sample], RuleSet, float]:
    """Longer recordings than Hypothesis builds quickly: 2,000 samples, same ingredients."""
    r = random.Random(seed)
    levels = [0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 6.0, 6.5, 7.0, 7.5, 9.5, 11.0, 37.0, 50.0, 62.0,
              75.0]
    backwards = seed % 2 == 0
    data: list[tuple[float, str, str, float | None, Quality]] = []
    for _ in range(2000):
        if r.random() > 0.02:
            dt = r.choice([0.0, 0.1, 0.25, 0.5, 1.0, 1.0, 1.0, 1.5])
        else:
            dt = r.choice([9.0, 25.0, -0.5, -3.0] if backwards else [9.0, 25.0])
        value: float | None = (r.choice(levels) if r.random() < 0.7 else r.uniform(-5, 90)
                               if r.random() < 0.9 else r.choice([None, math.nan, math.inf]))
        data.append((dt, r.choice(["p1", "p1", "p2", "p3"]),
                     r.choice(["vibration", "vibration", "temperature", "temperature", "running",
                               "mode"]),
                     value, r.choice([Quality.GOOD] * 8 + [Quality.UNCERTAIN, Quality.BAD])))
    rules = rule_set(r.choice(DELAYS), r.choice(DELAYS), r.randint(2, 5),
                     r.choice([2.0, 5.0, 30.0]), r.choice([1.0, 4.0, 20.0]),
                     r.choice([1.5, 4.0, 60.0]))
    return make_samples(data), rules, r.choice([1.0, 0.3, 2.5])


@pytest.mark.parametrize("seed", range(40))
def test_long_random_recordings(seed: int) -> None:
    samples, rules, tick = random_recording(seed)
    same(replay(rules, samples, tick), replay_columns(rules, columns_from_samples(samples), tick))


@pytest.mark.parametrize("seed", range(6))
def test_whole_recording_checks_in_small_chunks(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The skipped-sample and time-order checks run a chunk at a time; chunk edges change
    nothing (a tiny chunk puts many of them on skipped samples and backward steps)."""
    monkeypatch.setattr(replaydata, "_CHUNK", 7)
    samples, rules, tick = random_recording(seed)
    same(replay(rules, samples, tick), replay_columns(rules, columns_from_samples(samples), tick))


# --- streamed in slabs (rules.slabreplay) ---------------------------------------------------


def in_slabs(cols: Columns, cuts: Sequence[int]) -> list[Columns]:
    """Consecutive parts of `cols`, cut at these positions (as `iter_columns` would cut)."""
    edges = [0, *sorted({c for c in cuts if 0 < c < len(cols)}), len(cols)]
    return [Columns(cols.keys, cols.key[a:b], cols.ts[a:b], cols.value[a:b], cols.quality[a:b])
            for a, b in itertools.pairwise(edges)]


@settings(max_examples=400, deadline=None)
@given(data=rows, on=st.sampled_from(DELAYS), off=st.sampled_from(DELAYS),
       m=st.integers(2, 5), window=st.sampled_from([2.0, 5.0, 30.0]),
       limit=st.sampled_from([1.0, 4.0, 20.0]), age=st.sampled_from([1.5, 4.0, 60.0]),
       tick=st.sampled_from([1.0, 1.0, 0.3, 2.5]),
       cuts=st.lists(st.integers(0, 150), max_size=12))
def test_slab_replay_equals_the_reference(data: list[tuple[float, str, str, float | None,
                                                           Quality]],
                                          on: float, off: float, m: int, window: float,
                                          limit: float, age: float, tick: float,
                                          cuts: list[int]) -> None:
    rules = rule_set(on, off, m, window, limit, age)
    samples = make_samples(data)
    parts = in_slabs(columns_from_samples(samples), cuts)
    same(replay(rules, samples, tick), replay_slabs(rules, parts, tick))


@pytest.mark.parametrize("seed", range(40))
def test_long_random_recordings_in_slabs(seed: int) -> None:
    samples, rules, tick = random_recording(seed)
    cols = columns_from_samples(samples)
    cuts = random.Random(seed).sample(range(1, len(cols)), 25)
    same(replay(rules, samples, tick), replay_slabs(rules, in_slabs(cols, cuts), tick))


@pytest.mark.parametrize("delays", [(0.0, 0.0), (2.0, 3.5), (30.0, 0.5)])
@pytest.mark.parametrize("slab", [97, 500, 4000])
def test_long_quiet_recording_in_slabs(delays: tuple[float, float], slab: int) -> None:
    on, off = delays
    rules = rule_set(on, off, 3, 30.0, 20.0, 4.0)
    samples = steady(5000)
    cols = columns_from_samples(samples)
    expected = replay(rules, samples)
    same(expected, replay_slabs(rules, in_slabs(cols, range(slab, len(cols), slab))))


def beat(seconds: range, asset: str = "p1", signal: str = "mode",
         value: float = 0.0) -> list[Sample]:
    """A signal no rule of the scenario watches, once a second: it makes the ticks run."""
    return [Sample(asset, signal, value, Quality.GOOD, 1000.0 + t) for t in seconds]


def at(t: float, signal: str, value: float, asset: str = "p1") -> Sample:
    return Sample(asset, signal, value, Quality.GOOD, 1000.0 + t)


def scenario(rows: list[Sample]) -> list[Sample]:
    return sorted(rows, key=lambda s: s.source_ts)  # stable: equal times keep their order


# Each scenario has its decisive span (a debounce, a window, a silence) cross a slab boundary
# whichever single cut is made, and every cut is tried. Rules: KINDS with on delay 3 s (8 s for
# "delay"), off delay 2 s, 2 of the last 4 samples, a 5 s rate window, a 4 s stale limit, 4 s
# max age.
SCENARIOS = {
    # On delay (8 s here: longer than any window's context): over the level from 2 s to
    # 7.5 s, raised by a tick at 10 s (no sample then), held to 14 s.
    "delay": ("vib-high", scenario([*beat(range(24)),
                                     *(at(2 + i / 2, "vibration", 8.0) for i in range(12)),
                                     at(14, "vibration", 8.0),
                                     *(at(t, "vibration", 2.0) for t in (16, 17, 23))])),
    # Rate window: the oldest sample of the window is in the slab before the rise.
    "rate": ("temp-rate", scenario([at(t, "temperature", 40.0 if t < 5 else 70.0)
                                    for t in range(12)] + beat(range(14)))),
    # N of M: two spikes out of the last four samples, the first in the slab before.
    "count": ("vib-spikes", scenario([at(t, "vibration", 9.5 if t in (1, 3, 5) else 5.0)
                                      for t in range(12)])),
    # Combination: the running value comes in one slab, the vibration in the next.
    "combination": ("vib-running", scenario([*beat(range(16)), at(1, "running", 1.0),
                                              *(at(t, "vibration", 6.0) for t in range(2, 9)),
                                              at(13, "running", 0.0)])),
    # Stale: the signal falls silent in one slab; the silence passes the limit in another.
    "stale": ("silent", scenario([*beat(range(30)), at(0, "vibration", 2.5),
                                  at(1, "vibration", 2.5), at(25, "vibration", 2.5)])),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_boundary_anywhere_in_the_decisive_span(name: str) -> None:
    rule_id, samples = SCENARIOS[name]
    rules = rule_set(8.0 if name == "delay" else 3.0, 2.0, 4, 5.0, 4.0, 4.0)
    expected = replay(rules, samples)
    assert any(t.rule_id == rule_id and t.asset == "p1" and t.kind.value == "raised"
               for t in expected.transitions), "the scenario raises what it is about"
    cols = columns_from_samples(samples)
    for cut in range(1, len(cols)):
        same(expected, replay_slabs(rules, in_slabs(cols, [cut])))
    same(expected, replay_slabs(rules, in_slabs(cols, range(1, len(cols)))))  # one each


def test_streamed_from_a_file_in_slabs(tmp_path: Path) -> None:
    """`replay_recording` reads a .pbrec a few blocks at a time; the same as the reference."""
    samples = steady(3000)
    path = tmp_path / "r.pbrec"
    write_columns(path, columns_from_samples(samples), block_samples=100)
    rules = rule_set(2.0, 3.5, 3, 30.0, 20.0, 4.0)
    result, warning = replay_recording(rules, path, slab_samples=250)
    assert warning is None
    same(replay(rules, samples), result)
    start, end = 1e9 + 500, 1e9 + 2500
    within = [s for s in samples if start <= s.source_ts <= end]
    same(replay(rules, within), replay_recording(rules, path, start=start, end=end,
                                                 slab_samples=250)[0])
