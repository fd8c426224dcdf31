"""A delay that ran out before the next sample flips first (`RuleInstance._overdue`).

Device time can run ahead of the ticks: the broker's backlog after a restart, a device's
buffered readings, a payload of many samples. Judged only at ticks, an excursion that outlasted
its on-delay was cancelled by the sample that ended it, and the request was lost.
"""

from __future__ import annotations

from gateway.model import Quality, TransitionKind
from rules import RuleEngine
from tests.rules.conftest import RulesFrom, sample

RAISED, CLEARED = TransitionKind.RAISED, TransitionKind.CLEARED


def rule(kind: str, extra: str, delays: str = "on_delay_seconds = 1\noff_delay_seconds = 1") -> str:
    return f"""
[[rule]]
id = "r"
kind = "{kind}"
asset = "p1"
signal = "vibration"
{extra}
{delays}
"""


BAND = rule("threshold", "above = 7.1\nclear_below = 6.0")


def kinds(got: object) -> list[tuple[TransitionKind, float]]:
    return [(t.kind, t.ts) for t in got]  # type: ignore[attr-defined]


def test_an_excursion_that_outlasted_its_on_delay_raises_at_its_deadline(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(BAND))
    assert not engine.evaluate(sample("p1", "vibration", 8.0, 100.0))
    (t,) = engine.evaluate(sample("p1", "vibration", 3.0, 102.5))  # no tick in between
    assert (t.kind, t.ts, t.value) == (RAISED, 101.0, 8.0)
    assert t.reason == "vibration 8 above 7.1 for 1 s"
    # and the return to normal starts the off-delay, which the tick ends
    assert kinds(engine.tick(103.6)) == [(CLEARED, 103.6)]


def test_a_return_to_normal_that_outlasted_its_off_delay_clears_before_the_next_raise(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(BAND))
    engine.evaluate(sample("p1", "vibration", 8.0, 100.0))
    engine.tick(101.0)
    engine.evaluate(sample("p1", "vibration", 3.0, 102.0))
    # back above 3 s later, no tick between: the clear came first, then a new delay
    assert kinds(engine.evaluate(sample("p1", "vibration", 8.0, 105.0))) == [(CLEARED, 103.0)]
    assert kinds(engine.tick(106.0)) == [(RAISED, 106.0)]


def test_at_the_deadline_itself_the_sample_decides_as_before(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(BAND))
    engine.evaluate(sample("p1", "vibration", 8.0, 100.0))
    (t,) = engine.evaluate(sample("p1", "vibration", 8.5, 101.0))
    assert (t.kind, t.ts, t.value) == (RAISED, 101.0, 8.5)


def test_bad_data_after_the_deadline_does_not_cancel_the_raise(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(BAND))
    engine.evaluate(sample("p1", "vibration", 8.0, 100.0))
    (t,) = engine.evaluate(sample("p1", "vibration", None, 101.5, Quality.BAD))
    assert (t.kind, t.ts) == (RAISED, 101.0)


def test_a_mute_after_the_deadline_does_not_cancel_the_raise(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(BAND.replace(
        'signal = "vibration"', 'signal = "vibration"\n'
        'suppress_while = { signal = "maintenance_mode", equals = 1 }')))
    engine.evaluate(sample("p1", "maintenance_mode", 0.0, 99.0))
    engine.evaluate(sample("p1", "vibration", 8.0, 100.0))
    assert kinds(engine.evaluate(sample("p1", "maintenance_mode", 1.0, 101.5))) == [
        (RAISED, 101.0)]
    # a mute before the deadline still cancels the pending raise
    again = RuleEngine(rules_from(BAND.replace(
        'signal = "vibration"', 'signal = "vibration"\n'
        'suppress_while = { signal = "maintenance_mode", equals = 1 }')))
    again.evaluate(sample("p1", "vibration", 8.0, 100.0))
    assert not again.evaluate(sample("p1", "maintenance_mode", 1.0, 100.5))
    assert not again.tick(102.0)


def test_every_kind_with_delays_catches_up(rules_from: RulesFrom) -> None:
    count = RuleEngine(rules_from(rule("threshold", "above = 7.1\ncount = 2\nof_last_samples = 3")))
    count.evaluate(sample("p1", "vibration", 8.0, 100.0))
    count.evaluate(sample("p1", "vibration", 8.0, 100.2))  # 2 of 3: the on-delay starts
    assert kinds(count.evaluate(sample("p1", "vibration", 1.0, 103.0))) == [(RAISED, 101.2)]

    rate = RuleEngine(rules_from(rule("rate", "window_seconds = 10\nabove = 5.0")))
    rate.evaluate(sample("p1", "vibration", 1.0, 100.0))
    rate.evaluate(sample("p1", "vibration", 7.0, 100.5))  # +6 in the window
    assert kinds(rate.evaluate(sample("p1", "vibration", 1.0, 103.0))) == [(RAISED, 101.5)]

    bad = RuleEngine(rules_from(rule("bad_quality", "limit_seconds = 1",
                                     "off_delay_seconds = 1")))
    bad.evaluate(sample("p1", "vibration", None, 100.0, Quality.BAD))
    (t,) = bad.evaluate(sample("p1", "vibration", 3.0, 102.0))
    assert (t.kind, t.ts, t.value) == (RAISED, 101.0, None)  # a raise reports no value


COMBINATION = """
[[rule]]
id = "dry-running"
kind = "combination"
asset = "p1"
all_of = [{ signal = "running", equals = 1 }, { signal = "current", below = 5.0 }]
max_age_seconds = 10
on_delay_seconds = 2
"""


def test_a_combination_that_held_past_its_delay_raises_at_the_deadline(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(COMBINATION))
    engine.evaluate(sample("p1", "running", 1.0, 100.0))
    engine.evaluate(sample("p1", "current", 2.0, 100.0))  # dry running: the on-delay starts
    # normal again, no tick between: the raise at the deadline, then the clear (no off-delay)
    assert kinds(engine.evaluate(sample("p1", "current", 9.0, 104.0))) == [
        (RAISED, 102.0), (CLEARED, 104.0)]


def test_a_combination_whose_values_went_stale_before_the_deadline_starts_again(
        rules_from: RulesFrom) -> None:
    """At the deadline a value was too old to judge: the delay is dropped there, and the
    sample that came later starts it again."""
    engine = RuleEngine(rules_from(COMBINATION.replace("max_age_seconds = 10",
                                                       "max_age_seconds = 1.5")))
    engine.evaluate(sample("p1", "running", 1.0, 100.0))
    engine.evaluate(sample("p1", "current", 2.0, 100.5))  # on-delay until 102.5; running
    assert not engine.evaluate(sample("p1", "running", 1.0, 103.0))  # was stale from 101.5
    assert not engine.tick(104.0)
    assert kinds(engine.tick(105.0)) == []  # current (100.5) is stale now: nothing to judge
