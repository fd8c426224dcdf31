"""Property-based checks (Hypothesis) over random telemetry.

- with hysteresis and debounce, a raise and its clear (and a clear and the next raise) are never
  closer than the off (on) delay allows;
- per rule and asset, raises and clears alternate, starting with a raise: never two raises
  without a clear in between, and every clear names the episode it closes;
- replay is deterministic, and feeding the input in different chunks changes nothing.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Quality, Sample, Transition, TransitionKind
from rules import RuleSet, load_rule_files
from rules.replay import Replayer, replay

DELAYS = [0.0, 0.5, 1.0, 2.0, 3.0]

THRESHOLD = """
[[rule]]
id = "vib"
kind = "threshold"
asset = "p1"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = {on}
off_delay_seconds = {off}
"""

MIX = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "p*"
signal = "vibration"
above = 7.0
clear_below = 6.0
on_delay_seconds = 1
off_delay_seconds = 2
suppress_while = { signal = "maintenance_mode", equals = 1 }

[[rule]]
id = "vib-spikes"
kind = "threshold"
assets = ["p1", "p2"]
signal = "vibration"
outside = [1.0, 9.0]
count = 2
of_last_samples = 4

[[rule]]
id = "temp-band"
kind = "threshold"
asset = "p1"
signal = "temperature"
inside = [40.0, 60.0]
clear_outside = [35.0, 65.0]
off_delay_seconds = 1.5

[[rule]]
id = "temp-rate"
kind = "rate"
asset_pattern = "p*"
signal = "temperature"
window_seconds = 10
above = 20
clear_below = 5

[[rule]]
id = "silent"
kind = "stale"
assets = ["p1", "p2"]
signal = "vibration"
limit_seconds = 6

[[rule]]
id = "bad"
kind = "bad_quality"
asset_pattern = "p*"
signal = "temperature"
limit_seconds = 2
off_delay_seconds = 1

[[rule]]
id = "vib-running"
kind = "combination"
asset_pattern = "p*"
all_of = [{ signal = "vibration", above = 5.0 }, { signal = "running", equals = 1 }]
max_age_seconds = 4
on_delay_seconds = 0.5
"""


@functools.lru_cache(maxsize=64)
def load_text(text: str) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.toml"
        path.write_text(text)
        return load_rule_files([path])


def quality_for(value: float | None, q: Quality) -> Quality:
    return Quality.BAD if value is None else q


steps = st.lists(st.tuples(
    st.floats(0.05, 3.0),
    st.one_of(st.floats(0.0, 12.0), st.none()),
), min_size=1, max_size=120)

mixed = st.lists(st.tuples(
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 7.0]),
    st.sampled_from(["p1", "p2"]),
    st.sampled_from(["vibration", "vibration", "temperature", "running", "maintenance_mode"]),
    st.one_of(st.floats(0.0, 80.0), st.sampled_from([0.0, 1.0]), st.none()),
    st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]),
), min_size=1, max_size=200)


def vib_samples(data: Sequence[tuple[float, float | None]]) -> list[Sample]:
    out, ts = [], 1000.0
    for dt, value in data:
        ts += dt
        out.append(Sample("p1", "vibration", value, quality_for(value, Quality.GOOD), ts))
    return out


def mixed_samples(data: Sequence[tuple[float, str, str, float | None, Quality]]) -> list[Sample]:
    out, ts = [], 1000.0
    for dt, asset, signal, value, q in data:
        ts += dt
        out.append(Sample(asset, signal, value, quality_for(value, q), ts))
    return out


def assert_alternates(transitions: Sequence[Transition]) -> None:
    open_: dict[tuple[str, str], str] = {}
    for t in transitions:
        key = (t.rule_id, t.asset)
        if t.kind is TransitionKind.RAISED:
            assert key not in open_, f"second raise without a clear: {t}"
            open_[key] = t.episode_id
        else:
            assert open_.pop(key, None) == t.episode_id, f"clear without its raise: {t}"


@settings(max_examples=150, deadline=None)
@given(data=steps, on=st.sampled_from(DELAYS), off=st.sampled_from(DELAYS),
       tick=st.sampled_from([0.25, 1.0, 10.0]))
def test_debounce_spacing_with_hysteresis(data: list[tuple[float, float | None]], on: float,
                                          off: float, tick: float) -> None:
    rules = load_text(THRESHOLD.format(on=on, off=off))
    got = replay(rules, vib_samples(data), tick_seconds=tick).transitions
    assert_alternates(got)
    for a, b in itertools.pairwise(got):
        needed = off if a.kind is TransitionKind.RAISED else on
        assert b.ts - a.ts >= needed - 1e-9, (a, b)
    for t in got:  # hysteresis: a raise sees a value above 7.1, a clear one at or below 6.0
        assert t.value is not None
        assert (t.value > 7.1) if t.kind is TransitionKind.RAISED else (t.value <= 6.0)


@settings(max_examples=150, deadline=None)
@given(data=mixed)
def test_never_two_raises_without_a_clear(data: list[tuple[float, str, str, float | None,
                                                           Quality]]) -> None:
    result = replay(load_text(MIX), mixed_samples(data))
    assert_alternates(result.transitions)
    open_ids = {e.episode_id for e in result.episodes if e.cleared is None}
    assert len(open_ids) == sum(s.open_at_end for s in result.summary.values())


@settings(max_examples=100, deadline=None)
@given(data=mixed, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_replay_is_deterministic_and_chunking_changes_nothing(
        data: list[tuple[float, str, str, float | None, Quality]], cuts: list[int]) -> None:
    samples = mixed_samples(data)
    once = replay(load_text(MIX), samples).transitions
    again = replay(load_text(MIX + "\n"), iter(samples)).transitions  # a fresh rule set
    assert once == again
    chunked = Replayer(load_text(MIX))
    bounds = sorted({0, len(samples), *(c for c in cuts if c <= len(samples))})
    for lo, hi in itertools.pairwise(bounds):
        chunked.feed(samples[lo:hi])
    result = chunked.finish()
    assert result.transitions == once
    assert result.samples == len(samples)
