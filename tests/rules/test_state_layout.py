"""The compact state layouts (issue 14): the rate window as float64 bytes, the combination's
values flat. They must behave exactly as the plain layouts did, and state written in the plain
layouts before the upgrade must still load."""

from __future__ import annotations

import math
import random
import struct
from collections import deque

import msgpack

from gateway.model import RuleState, TransitionKind
from rules.engine import RuleEngine
from rules.episode import RuleInstance
from rules.state import new_state
from rules.threshold import RateRule
from rules.watch import CombinationRule, StaleRule
from tests.rules.conftest import RulesFrom, sample

RATE = """
[[rule]]
id = "rising"
kind = "rate"
asset = "p1"
signal = "temperature"
window_seconds = 30
above = 5.0
clear_below = 2.0
"""

COMBINATION = """
[[rule]]
id = "dry"
kind = "combination"
asset = "p1"
all_of = [{ signal = "running", equals = 1 }, { signal = "current", below = 5.0 }]
max_age_seconds = 10
"""


def test_the_rate_window_gives_the_change_of_the_plain_window_across_cuts(
        rules_from: RulesFrom) -> None:
    """Thousands of samples, so the flat window is cut (compacted) many times; after every
    sample its change is what the plain deque of (time, value) pairs gives."""
    rule = rules_from(RATE).get("rising")
    assert rule is not None
    inst = rule.build("p1")
    assert isinstance(inst, RateRule)
    rnd = random.Random(14)
    plain: deque[tuple[float, float]] = deque()
    raised = 0
    ts = 0.0
    for _ in range(6000):
        ts += rnd.choice((0.25, 0.5, 1.0, 3.0))
        v = float(rnd.choice((1, 2, 2, 3, 9)))  # repeats: equal neighbours merge
        if plain and plain[-1][1] == v:
            plain.pop()
        plain.append((ts, v))
        while plain[0][0] < ts - 30:
            plain.popleft()
        t = inst.evaluate(sample("p1", "temperature", v, ts))
        assert not isinstance(t, tuple)  # no delay here: one transition at most
        raised += t is not None and t.kind is TransitionKind.RAISED
        assert inst.delta == v - plain[0][1]
        assert inst.window_pairs() == list(plain)
    assert raised > 10  # the data did move the rule
    assert len(inst.points) < 4 * 1024  # cut now and then, not grown without end


def test_a_rate_window_stored_as_pairs_before_the_upgrade_still_loads(
        rules_from: RulesFrom) -> None:
    rule = rules_from(RATE).get("rising")
    assert rule is not None
    inst = rule.build("p1")
    assert isinstance(inst, RateRule)
    for ts in range(40):
        inst.evaluate(sample("p1", "temperature", 20.0 + ts % 7, float(ts)))
    data = msgpack.unpackb(msgpack.packb(inst.snapshot()))
    assert isinstance(data[8][2], bytes)  # the compact layout
    old = [*data[:8], [data[8][0], data[8][1], [list(p) for p in inst.window_pairs()]]]
    fresh, before = rule.build("p1"), rule.build("p1")
    fresh.load(old)
    before.load(data)
    assert fresh.snapshot() == before.snapshot() == inst.snapshot()
    later = sample("p1", "temperature", 40.0, 41.0)
    assert fresh.evaluate(later) == inst.evaluate(later)


def test_rate_window_bytes_that_do_not_fit_are_refused(rules_from: RulesFrom) -> None:
    rule = rules_from(RATE).get("rising")
    assert rule is not None
    inst = rule.build("p1")
    inst.evaluate(sample("p1", "temperature", 20.0, 1.0))
    data = list(msgpack.unpackb(msgpack.packb(inst.snapshot())))
    first, delta, window = data[8]
    clean = rule.build("p1").snapshot()
    for wrong in (window[:-3], window[:8] + struct.pack("<d", math.nan)):
        other = rule.build("p1")
        try:
            other.load([*data[:8], [first, delta, wrong]])
        except ValueError:
            assert other.snapshot() == clean
        else:
            raise AssertionError(f"loaded a damaged window {wrong!r}")


def test_combination_values_stored_per_condition_before_the_upgrade_still_load(
        rules_from: RulesFrom) -> None:
    rule = rules_from(COMBINATION).get("dry")
    assert rule is not None
    inst = rule.build("p1")
    assert isinstance(inst, CombinationRule)
    inst.evaluate(sample("p1", "running", 1.0, 1.0))
    inst.evaluate(sample("p1", "current", None, 2.0))
    data = msgpack.unpackb(msgpack.packb(inst.snapshot()))
    assert len(data[8]) == 6  # flat: times, values, verdicts
    old = [*data[:8], [[w, v, ok] for w, v, ok in zip(inst.seen, inst.values, inst.verdict,
                                                      strict=True)]]
    fresh = rule.build("p1")
    fresh.load(old)
    assert fresh.snapshot() == inst.snapshot()


def test_the_fast_rule_state_is_a_rule_state_like_any_other() -> None:
    made = new_state("rising", "p1", "fp", (1, True))
    assert type(made) is RuleState
    assert made == RuleState("rising", "p1", "fp", (1, True))
    assert hash(made) == hash(RuleState("rising", "p1", "fp", (1, True)))
    assert repr(made) == repr(RuleState("rising", "p1", "fp", (1, True)))


ONE_FRAME = """
[[rule]]
id = "rising"
kind = "rate"
asset = "p1"
signal = "temperature"
window_seconds = 5
above = 3.0
clear_below = 1.0
suppress_while = { signal = "maintenance", equals = 1 }

[[rule]]
id = "silent"
kind = "stale"
asset = "p1"
signal = "temperature"
limit_seconds = 4
suppress_while = { signal = "maintenance", equals = 1 }

[[rule]]
id = "dry"
kind = "combination"
asset = "p1"
all_of = [{ signal = "running", equals = 1 }, { signal = "current", below = 5.0 }]
max_age_seconds = 10
suppress_while = { signal = "maintenance", equals = 1 }
"""


def test_one_frame_snapshots_are_the_general_snapshot(rules_from: RulesFrom) -> None:
    """Rate, stale and combination rules snapshot in one frame when no request is open and
    nothing mutes them; in every state a random stream reaches (raised, muted, pending, bad
    data) their snapshot is exactly what the general `RuleInstance.snapshot` gives."""
    engine = RuleEngine(rules_from(ONE_FRAME))
    insts = engine.instances()
    assert {type(i) for i in insts} == {RateRule, StaleRule, CombinationRule}
    rnd = random.Random(1414)
    seen = {"raised": 0, "muted": 0}
    ts = 0.0
    for _ in range(3000):
        ts += rnd.choice((0.5, 1.0, 2.0, 6.0))
        signal = rnd.choice(("temperature", "temperature", "current", "running",
                             "maintenance"))
        value = {"temperature": rnd.choice((20.0, 22.0, 26.0, None)),
                 "current": rnd.choice((2.0, 8.0, None)), "running": rnd.choice((0.0, 1.0)),
                 "maintenance": float(rnd.random() < 0.2)}[signal]
        engine.evaluate(sample("p1", signal, value, ts))
        engine.tick(ts)
        for inst in insts:
            assert inst.snapshot() == RuleInstance.snapshot(inst), type(inst).__name__
            seen["raised"] += inst.request is not None
            seen["muted"] += inst.suppressed
    assert seen["raised"] > 100 and seen["muted"] > 100  # both slow paths were taken
