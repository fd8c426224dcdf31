"""The rate window stored as a log (rules/windowlog.py): a commit writes the window's new tail
and now and then a segment, never the whole window, and a restart anywhere still changes
nothing; segment rows nobody uses are forgotten."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import msgpack
import pytest

from gateway.model import RuleState, Sample
from rules import RuleEngine, RuleSet
from rules.threshold import RateRule
from rules.windowlog import SEP, split_key
from tests.rules.conftest import RulesFrom, sample
from tests.rules.test_fastreplay import random_recording
from tests.rules.test_state import (
    Store,
    commit,
    events_from,
    restart,
    round_trip,
    run_with_restarts,
)

RATE = """
[[rule]]
id = "rising"
kind = "rate"
asset = "p1"
signal = "temperature"
window_seconds = 600
above = 5.0
clear_below = 2.0
"""


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Segments of 3 pairs: the short test windows then cross many segment boundaries."""
    monkeypatch.setattr(RateRule, "segment_points", 3)
    yield


def stored_bytes(states: list[RuleState]) -> int:
    return sum(len(msgpack.packb(s.data)) for s in states if s.data is not None)


def rising(t: int) -> float:
    """A temperature that never repeats itself, so every sample adds a point to the window."""
    return 40.0 + 0.001 * t + 0.5 * math.sin(t / 7)


@pytest.mark.usefixtures("small_segments")
@pytest.mark.parametrize("seed", range(8))
def test_restarts_with_the_window_in_segments_change_nothing(seed: int) -> None:
    samples, rules, _ = random_recording(seed)
    r = random.Random(seed)
    events = events_from(samples, [r.randrange(64) for _ in samples])
    uninterrupted = run_with_restarts(rules, events, set())
    cuts = {r.randrange(len(events)) for _ in range(4)}
    assert run_with_restarts(rules, events, cuts) == uninterrupted


def run_rate(rules: RuleSet, seconds: int, store: Store, engine: RuleEngine | None = None,
             t0: int = 0) -> tuple[RuleEngine, list[int]]:
    """1 Hz of `rising` through the engine, a commit a second; the bytes of each commit."""
    engine = engine or RuleEngine(rules)
    sizes = []
    for t in range(t0, t0 + seconds):
        engine.evaluate(sample("p1", "temperature", rising(t), float(t)))
        states = engine.take_dirty()
        sizes.append(stored_bytes(states))
        commit(store, states)
    return engine, sizes


def test_a_commit_costs_the_change_not_the_window(rules_from: RulesFrom) -> None:
    """A full 600-point window: each commit writes the instance row with at most a segment's
    worth of tail, plus a segment now and then; the whole window would be ~9.6 kB."""
    rules = rules_from(RATE)
    store = Store()
    engine, sizes = run_rate(rules, 2000, store)
    inst = engine.instance("rising", "p1")
    assert isinstance(inst, RateRule)
    window = len(inst.window_pairs())
    assert window > 590
    limit = (2 * RateRule.segment_points + 1) * 16 + 300  # tail + a new segment + the rest
    assert max(sizes[700:]) < limit < window * 16
    # Segments that left the window were deleted: what is stored is about one window.
    segments = [k for k in store if split_key(k[1]) is not None]
    assert len(segments) <= window // RateRule.segment_points + 2
    assert stored_bytes(list(store.values())) < (window + 2 * RateRule.segment_points) * 17


def test_a_restart_takes_the_window_back_from_its_segments(rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    store = Store()
    before, _ = run_rate(rules, 1500, store)
    after = restart(rules, before, store)
    old, new = before.instance("rising", "p1"), after.instance("rising", "p1")
    assert isinstance(old, RateRule) and isinstance(new, RateRule)
    assert new.window_pairs() == old.window_pairs() and new.delta == old.delta
    # ... and it goes on from there: the next commits name the same segments.
    _, sizes = run_rate(rules, 300, store, after, t0=1500)
    again = restart(rules, after, store)
    assert again.instance("rising", "p1").window_pairs() == new.window_pairs()  # type: ignore[union-attr]
    assert max(sizes) < (2 * RateRule.segment_points + 1) * 16 + 300


def test_a_missing_segment_starts_the_window_clean_and_forgets_the_rest(
        rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    store = Store()
    run_rate(rules, 1000, store)
    segments = sorted(k for k in store if split_key(k[1]) is not None)
    del store[segments[len(segments) // 2]]
    fresh = RuleEngine(rules)
    assert fresh.restore_states(round_trip(store)) == 0  # refused whole: starts clean
    inst = fresh.instance("rising", "p1")
    assert isinstance(inst, RateRule) and inst.window_pairs() == []
    commit(store, fresh.take_dirty())
    assert [k for k in store if split_key(k[1]) is not None] == []  # no orphans left
    assert store[("rising", "p1")].data[8][6] == 0  # its own row names no segment


def test_segments_of_a_rule_removed_while_stopped_or_on_reload_are_forgotten(
        rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    store = Store()
    engine, _ = run_rate(rules, 900, store)
    assert any(SEP in asset for _, asset in store)
    other = rules_from(RATE.replace('"rising"', '"other"'))
    # Removed on reload: its row and every segment go.
    engine.replace(other, 900.0)
    commit(store, engine.take_dirty())
    assert not any(rule_id == "rising" for rule_id, _ in store)
    # Removed while the gateway was stopped: forgotten at the first commit after start.
    run_rate(rules, 900, store)
    later = RuleEngine(other)
    later.restore_states(round_trip(store))
    commit(store, later.take_dirty())
    assert not any(rule_id == "rising" for rule_id, _ in store)


def test_a_plain_snapshot_still_holds_the_whole_window(rules_from: RulesFrom) -> None:
    """`snapshot` (tools, tests, the layout before the log) is unchanged: a copy of the
    window that loads on its own."""
    rules = rules_from(RATE)
    engine, _ = run_rate(rules, 700, Store())
    inst = engine.instance("rising", "p1")
    assert isinstance(inst, RateRule)
    fresh = rules.rules[0].build("p1")
    assert isinstance(fresh, RateRule)
    fresh.load(msgpack.unpackb(msgpack.packb(inst.snapshot())))
    assert fresh.window_pairs() == inst.window_pairs()
    s: Sample = sample("p1", "temperature", rising(700), 700.0)
    assert fresh.evaluate(s) == inst.evaluate(s) and fresh.delta == inst.delta


@pytest.mark.usefixtures("small_segments")
def test_a_restart_after_any_commit_keeps_the_window_exactly(rules_from: RulesFrom) -> None:
    """Runs of equal values move the newest pair forward in time instead of adding one: that
    pair must never be in a segment yet. A restart after each commit, then more samples: the
    window is the uninterrupted one, pair for pair."""
    rules = rules_from(RATE.replace("600", "20"))
    values = [float(v) for v in [1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5, 1, 1, 1, 1, 7, 7, 2] * 4]

    def feed(engine: RuleEngine, store: Store, a: int, b: int) -> None:
        for t in range(a, b):
            engine.evaluate(sample("p1", "temperature", values[t], float(t)))
            commit(store, engine.take_dirty())

    def window(engine: RuleEngine) -> list[tuple[float, float]]:
        inst = engine.instance("rising", "p1")
        assert isinstance(inst, RateRule)
        return inst.window_pairs()

    for cut in range(1, len(values) - 1):
        store = Store()
        straight, broken = RuleEngine(rules), RuleEngine(rules)
        feed(straight, Store(), 0, len(values))
        feed(broken, store, 0, cut)
        broken = restart(rules, broken, store)
        feed(broken, store, cut, len(values))
        assert window(broken) == window(straight), cut
