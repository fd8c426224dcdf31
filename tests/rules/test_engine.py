"""The engine: routing, restart (restore), hot reload (replace), and ticks."""

from __future__ import annotations

import pytest

from gateway.model import EpisodeState, Quality, Rule, Sample, TransitionKind
from rules import RuleEngine
from rules.engine import GONE, REMOVED
from tests.rules.conftest import RulesFrom, sample
from tests.rules.planted import plant

VIB = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = LEVEL
on_delay_seconds = 2
off_delay_seconds = 3
"""
TEMP = """
[[rule]]
id = "temp-high"
kind = "threshold"
asset = "pump-1"
signal = "temperature"
above = 80
"""


def vib(level: float = 6.0) -> str:
    return VIB.replace("LEVEL", str(level))


def raise_vibration(engine: RuleEngine, asset: str = "pump-1", t0: float = 100.0) -> str:
    assert not engine.evaluate(sample(asset, "vibration", 8.0, t0))
    (t,) = engine.evaluate(sample(asset, "vibration", 8.0, t0 + 2))
    assert t.kind is TransitionKind.RAISED
    return t.episode_id


def test_routing_only_reaches_rules_on_that_signal(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib() + TEMP))
    assert engine.evaluate(sample("pump-1", "current", 99.0, 1.0)) == ()
    assert engine.evaluate(sample("fan-1", "vibration", 99.0, 1.0)) == ()
    (t,) = engine.evaluate(sample("pump-1", "temperature", 81.0, 1.0))
    assert (t.rule_id, t.asset, t.episode_id) == ("temp-high", "pump-1", "temp-high/pump-1/1000")
    # The pattern rule exists for pump-1 only once pump-1 sent its signal (vibration).
    assert {(i.rule_id, i.asset) for i in engine.instances()} == {("temp-high", "pump-1")}
    engine.evaluate(sample("pump-1", "vibration", 1.0, 2.0))
    assert {(i.rule_id, i.asset) for i in engine.instances()} == {("vib-high", "pump-1"),
                                                                  ("temp-high", "pump-1")}


def test_tick_raises_after_the_delay_without_a_new_sample(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib()))
    assert not engine.evaluate(sample("pump-1", "vibration", 8.0, 10.0))
    assert not engine.tick(11.9)
    (t,) = engine.tick(12.0)
    assert (t.kind, t.ts, t.value) == (TransitionKind.RAISED, 12.0, 8.0)
    assert not engine.tick(13.0)


def test_restore_after_restart_means_no_second_raise(rules_from: RulesFrom) -> None:
    rules = rules_from(vib() + TEMP)
    first = RuleEngine(rules)
    episode_id = raise_vibration(first)
    persisted = first.open_episodes()
    assert persisted == [EpisodeState("vib-high", "pump-1", episode_id, 102.0, 3)]

    after = RuleEngine(rules)
    after.restore(persisted)
    for ts in (200.0, 201.0, 205.0):
        assert not after.evaluate(sample("pump-1", "vibration", 8.0, ts))
    assert not after.evaluate(sample("pump-1", "vibration", 5.0, 206.0))
    (t,) = after.evaluate(sample("pump-1", "vibration", 5.0, 209.0))
    assert (t.kind, t.episode_id) == (TransitionKind.CLEARED, episode_id)


def test_restored_episode_of_a_vanished_rule_clears_at_the_next_tick(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(TEMP))
    engine.restore([EpisodeState("gone-rule", "pump-1", "gone-rule/pump-1/5", 5.0, 2)])
    assert [e.episode_id for e in engine.open_episodes()] == ["gone-rule/pump-1/5"]
    (t,) = engine.tick(50.0)
    assert (t.kind, t.episode_id, t.reason, t.severity) == (TransitionKind.CLEARED,
                                                            "gone-rule/pump-1/5", GONE, 2)
    assert engine.open_episodes() == []


def test_reload_unchanged_rule_keeps_open_episode_and_timers(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib()))
    episode_id = raise_vibration(engine)
    assert not engine.evaluate(sample("pump-2", "vibration", 8.0, 103.0))  # pump-2 pending
    before = {i.asset: i for i in engine.instances()}

    assert engine.replace(rules_from(vib() + TEMP), now=104.0) == []
    after = {i.asset: i for i in engine.instances() if i.rule_id == "vib-high"}
    assert after["pump-1"] is before["pump-1"] and after["pump-2"] is before["pump-2"]
    assert not engine.evaluate(sample("pump-1", "vibration", 8.0, 104.5))  # no second raise
    (t,) = engine.evaluate(sample("pump-2", "vibration", 8.0, 105.0))  # timer went on
    assert (t.kind, t.asset) == (TransitionKind.RAISED, "pump-2")
    assert episode_id in {e.episode_id for e in engine.open_episodes()}
    assert engine.rule_ids() == ["vib-high", "temp-high"]


def test_reload_removed_rule_clears_its_episode_saying_why(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib() + TEMP))
    episode_id = raise_vibration(engine)
    (t,) = engine.replace(rules_from(TEMP), now=150.0)
    assert (t.kind, t.episode_id, t.ts, t.reason) == (TransitionKind.CLEARED, episode_id, 150.0,
                                                      REMOVED)
    assert engine.open_episodes() == []
    assert not engine.evaluate(sample("pump-1", "vibration", 9.0, 151.0))


def test_reload_changed_rule_restarts_clean_but_keeps_its_episode(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib()))
    episode_id = raise_vibration(engine)
    assert not engine.evaluate(sample("pump-2", "vibration", 8.0, 103.0))  # pending on pump-2
    old = {i.asset: i for i in engine.instances()}

    assert engine.replace(rules_from(vib(level=6.5)), now=104.0) == []
    new = {i.asset: i for i in engine.instances()}
    assert new["pump-1"] is not old["pump-1"] and new["pump-2"] is not old["pump-2"]
    # pump-2's debounce timer restarted: 2 s from the reload's first sample, not from 103.
    assert not engine.evaluate(sample("pump-2", "vibration", 8.0, 105.0))
    assert not engine.evaluate(sample("pump-2", "vibration", 8.0, 106.0))
    (t,) = engine.evaluate(sample("pump-2", "vibration", 8.0, 107.0))
    assert t.kind is TransitionKind.RAISED
    # pump-1's open episode carried over (no new request) and clears under the new level.
    assert not engine.evaluate(sample("pump-1", "vibration", 6.4, 110.0))
    (c,) = engine.evaluate(sample("pump-1", "vibration", 6.4, 113.0))
    assert (c.kind, c.episode_id) == (TransitionKind.CLEARED, episode_id)


def test_reload_new_rule_starts_clean(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib()))
    assert not engine.evaluate(sample("pump-1", "temperature", 90.0, 1.0))
    engine.replace(rules_from(vib() + TEMP), now=2.0)
    (t,) = engine.evaluate(sample("pump-1", "temperature", 90.0, 3.0))
    assert (t.rule_id, t.ts) == ("temp-high", 3.0)


def test_a_reload_reaches_the_asset_of_the_sample_before(rules_from: RulesFrom) -> None:
    """The engine keeps the last asset's signals at hand (samples of one asset come together):
    after a reload the same asset object must reach the new rules, not the old routes."""
    asset = "".join(["pump", "-1"])  # one object for every sample, as a driver's route has
    engine = RuleEngine(rules_from(vib()))
    for ts in (1.0, 2.0):  # the second is looked up through the kept asset
        assert not engine.evaluate(sample(asset, "temperature", 90.0, ts))
    engine.replace(rules_from(vib() + TEMP), now=3.0)
    (t,) = engine.evaluate(sample(asset, "temperature", 90.0, 4.0))
    assert (t.rule_id, t.ts) == ("temp-high", 4.0)
    engine.replace(rules_from(vib()), now=5.0)  # and away again: the clear, then nothing
    assert not engine.evaluate(sample(asset, "temperature", 95.0, 6.0))
    assert not engine.evaluate(sample(asset, "temperature", 95.0, 7.0))


def test_bad_quality_sample_is_no_threshold_crossing(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(TEMP))
    assert not engine.evaluate(sample("pump-1", "temperature", None, 1.0))
    assert not engine.evaluate(sample("pump-1", "temperature", 95.0, 2.0, Quality.BAD))
    assert engine.evaluate(sample("pump-1", "temperature", 95.0, 3.0, Quality.UNCERTAIN))
    assert not engine.evaluate(sample("pump-1", "temperature", 20.0, 4.0, Quality.BAD))
    assert len(engine.open_episodes()) == 1


def test_close_without_episode_is_silent(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(TEMP))
    assert engine.replace(rules_from(vib()), now=1.0) == []


def test_transition_carries_request_details(rules_from: RulesFrom) -> None:
    text = TEMP + ('severity = 1\ntitle = "Hot {asset}: {value} C"\nfailure_code = "BRG"\n'
                   'breakdown = true\nlong_text = "{signal} by {rule_id}"\n')
    (t,) = RuleEngine(rules_from(text)).evaluate(sample("pump-1", "temperature", 85.25, 7.0))
    assert t.severity == 1
    assert (t.request.title, t.request.priority, t.request.failure_code, t.request.breakdown,
            t.request.long_text) == ("Hot pump-1: 85.25 C", 1, "BRG", True,
                                     "temperature by temp-high")
    assert t.reason == "temperature 85.25 above 80"


COUNT_AND_RATE = """
[[rule]]
id = "spikes"
kind = "threshold"
asset = "p1"
signal = "vibration"
above = 10.0
count = 2
of_last_samples = 3

[[rule]]
id = "rising"
kind = "rate"
asset = "p1"
signal = "temperature"
window_seconds = 10
above = 5.0
"""


def test_restored_count_and_rate_rules_do_not_clear_on_too_little_data(
        rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(COUNT_AND_RATE))
    engine.restore([EpisodeState("spikes", "p1", "spikes/p1/1", 0.001, 3),
                    EpisodeState("rising", "p1", "rising/p1/1", 0.001, 3)])
    # A restart forgot the samples behind the episodes; the first ones alone prove nothing.
    assert not engine.evaluate(sample("p1", "vibration", 11.0, 1.0))
    assert not engine.evaluate(sample("p1", "vibration", 5.0, 2.0))
    (t,) = engine.evaluate(sample("p1", "vibration", 5.0, 3.0))  # 2 of the last 3 clear
    assert (t.kind, t.episode_id) == (TransitionKind.CLEARED, "spikes/p1/1")
    for ts in range(1, 10):
        assert not engine.evaluate(sample("p1", "temperature", 50.0, float(ts)))
    (t,) = engine.evaluate(sample("p1", "temperature", 50.0, 11.0))  # a full window seen
    assert (t.kind, t.episode_id) == (TransitionKind.CLEARED, "rising/p1/1")


def test_pattern_rule_is_built_on_restore(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(vib()))
    engine.restore([EpisodeState("vib-high", "pump-7", "vib-high/pump-7/1", 0.001, 3)])
    assert not engine.evaluate(sample("pump-7", "vibration", 9.0, 5.0))  # still high: quiet
    assert [e.episode_id for e in engine.open_episodes()] == ["vib-high/pump-7/1"]


def test_instances_satisfy_the_rule_protocol(rules_from: RulesFrom) -> None:
    def as_rule(r: Rule) -> Rule:
        return r

    for inst in RuleEngine(rules_from(vib() + TEMP + COUNT_AND_RATE)).instances():
        assert as_rule(inst).keys()


def test_bad_quality_raised_by_a_tick_reports_no_value(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from('[[rule]]\nid = "failed"\nkind = "bad_quality"\n'
                                   'asset = "p1"\nsignal = "vibration"\nlimit_seconds = 5\n'))
    assert not engine.evaluate(sample("p1", "vibration", 2.3, 0.0))
    assert not engine.evaluate(sample("p1", "vibration", None, 1.0))
    (t,) = engine.tick(6.0)
    assert (t.kind, t.value, t.reason) == (TransitionKind.RAISED, None,
                                           "vibration quality bad for 5 s")
    (t,) = engine.evaluate(sample("p1", "vibration", 2.4, 7.0))
    assert (t.kind, t.value) == (TransitionKind.CLEARED, 2.4)


BUGGY_FIRST = """
[[rule]]
id = "vib-sensor"
kind = "bad_quality"
asset = "pump-1"
signal = "vibration"
limit_seconds = 5
""" + TEMP.replace('"temperature"', '"vibration"').replace("temp-high", "vib-over")


def plant_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bad-quality kind raises on 666 and at every tick (a bug in one rule kind)."""
    from rules.watch import BadQualityRule

    def evaluate(self: BadQualityRule, s: Sample) -> object:
        if s.value == 666.0:
            raise ZeroDivisionError("planted")
        return BadQualityRule.evaluate(self, s)

    def tick(self: BadQualityRule, now: float) -> None:
        raise ZeroDivisionError("planted at a tick")

    plant(monkeypatch, "BadQualityRule", evaluate=evaluate, tick=tick)


def test_a_rule_that_raises_is_reported_and_the_others_go_on(
        rules_from: RulesFrom, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `on_error` (the daemon's), a failing rule is skipped alone: the rule after it on the
    signal still raises on the same sample, and still ticks."""
    plant_bug(monkeypatch)
    failed: list[tuple[str, Sample | None, str]] = []
    engine = RuleEngine(rules_from(BUGGY_FIRST + vib()),
                        on_error=lambda rule, s, exc: failed.append((rule, s, str(exc))))
    poison = sample("pump-1", "vibration", 666.0, 10.0)
    (t,) = engine.evaluate(poison)  # vib-over raises at once; vib-high waits for its delay
    assert (t.rule_id, t.kind) == ("vib-over", TransitionKind.RAISED)
    assert failed == [("vib-sensor", poison, "planted")]
    (t,) = engine.tick(12.0)  # the sensor rule fails first in tick order, vib-high still raises
    assert (t.rule_id, t.kind) == ("vib-high", TransitionKind.RAISED)
    assert failed[1:] == [("vib-sensor", None, "planted at a tick")]


def test_without_on_error_a_rule_that_raises_raises(
        rules_from: RulesFrom, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay tools run without `on_error`: a rule bug stops them with its traceback."""
    plant_bug(monkeypatch)
    engine = RuleEngine(rules_from(BUGGY_FIRST + vib()))
    with pytest.raises(ZeroDivisionError, match="planted"):
        engine.evaluate(sample("pump-1", "vibration", 666.0, 10.0))
    with pytest.raises(ZeroDivisionError, match="planted at a tick"):
        engine.tick(12.0)


def test_a_failing_mute_handler_is_reported_with_its_rule(
        rules_from: RulesFrom, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mute-signal handler is called through the engine too: its failure names its rule."""
    from rules.episode import RuleInstance

    def broken(self: RuleInstance, s: Sample) -> None:
        raise ValueError("mute bug")

    monkeypatch.setattr(RuleInstance, "_on_mute_signal", broken)
    failed: list[str] = []
    rules = rules_from(TEMP + 'suppress_while = { signal = "running", equals = 0 }\n')
    engine = RuleEngine(rules, on_error=lambda rule, s, exc: failed.append(rule))
    assert engine.evaluate(sample("pump-1", "running", 0.0, 1.0)) == ()
    assert failed == ["temp-high"]
