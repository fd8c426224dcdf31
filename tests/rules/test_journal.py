"""The input journal (rules/journal.py): what a commit stores, checkpoints, replay at start.

That a restart anywhere is invisible with a journal is the property test in test_state.py (run
with and without one); these are the single behaviours around it.
"""

from __future__ import annotations

import msgpack
import pytest

from gateway.config import ConfigError, load
from gateway.model import EpisodeState, Quality, RuleState, Sample
from rules import RuleEngine
from rules import journal as jn
from rules.state import StateError
from tests.rules.conftest import RulesFrom, sample
from tests.rules.planted import plant
from tests.rules.test_state import Store, commit, round_trip

RATE = """
[[rule]]
id = "temp-rising"
kind = "rate"
asset = "pump-1"
signal = "temperature"
window_seconds = 60
above = 5.0
clear_below = 2.0

[[rule]]
id = "silent"
kind = "stale"
asset = "pump-1"
signal = "temperature"
limit_seconds = 30
"""
THRESHOLD = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
"""


def rows_of(states: list[RuleState]) -> list[tuple[str, str, bool]]:
    return sorted((s.rule_id, s.asset, s.data is not None) for s in states)


def warm(engine: RuleEngine, store: Store, until: int) -> None:
    """One temperature sample a second, committed after each (the first commit is the
    checkpoint every engine starts with)."""
    for ts in range(until):
        engine.evaluate(sample("pump-1", "temperature", 40.0 + ts * 0.01, float(ts)))
        commit(store, engine.take_dirty())


def test_a_commit_stores_its_inputs_not_every_changed_instance(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(RATE), journal_samples=1000)
    engine.evaluate(sample("pump-1", "temperature", 40.0, 0.0))
    first = engine.take_dirty()  # a fresh engine starts with a checkpoint
    assert rows_of(first) == [("silent", "pump-1", True), ("temp-rising", "pump-1", True)]
    engine.evaluate(sample("pump-1", "temperature", 40.5, 1.0))
    engine.tick(1.5)
    (row,) = engine.take_dirty()
    assert (row.rule_id, row.asset) == (jn.JOURNAL, jn.row_key(0))
    assert jn.decode(msgpack.unpackb(msgpack.packb(row.data))) == [
        Sample("pump-1", "temperature", 40.5, Quality.GOOD, 1.0), 1.5]


def test_nothing_is_stored_for_inputs_that_changed_nothing(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(THRESHOLD), journal_samples=1000)
    engine.evaluate(sample("pump-1", "vibration", 7.5, 0.0))  # raises: a change
    engine.take_dirty()
    engine.evaluate(sample("pump-1", "vibration", 8.0, 1.0))  # still above: nothing new
    engine.evaluate(sample("pump-1", "other", 1.0, 1.0))  # no rule cares
    assert engine.take_dirty() == []


def test_a_checkpoint_stores_the_changed_instances_and_deletes_the_journal(
        rules_from: RulesFrom) -> None:
    engine, store = RuleEngine(rules_from(RATE), journal_samples=5), Store()
    warm(engine, store, 6)  # the start's checkpoint, then 5 journal rows of one sample
    assert sorted(a for r, a in store if r == jn.JOURNAL) == [jn.row_key(k) for k in range(5)]
    engine.evaluate(sample("pump-1", "temperature", 41.0, 6.0))
    states = engine.take_dirty()  # the 6th sample since the checkpoint: more than 5
    assert rows_of(states) == [(jn.JOURNAL, jn.row_key(k), False) for k in range(5)] + [
        ("silent", "pump-1", True), ("temp-rising", "pump-1", True)]
    commit(store, states)
    assert not [key for key in store if key[0] == jn.JOURNAL]


def test_a_start_evaluates_the_journal_again_and_checkpoints(rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    engine, store = RuleEngine(rules, journal_samples=10_000), Store()
    warm(engine, store, 40)
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.replayed == 39
    for key in (("temp-rising", "pump-1"), ("silent", "pump-1")):
        assert after.instance(*key).snapshot() == engine.instance(*key).snapshot()  # type: ignore[union-attr]
    states = after.take_dirty()  # the checkpoint: the journal rows go, the state is stored
    assert sum(1 for s in states if s.rule_id == jn.JOURNAL and s.data is None) == 39


def test_a_journal_of_other_rules_reaches_only_the_unchanged_instances(
        rules_from: RulesFrom) -> None:
    engine, store = RuleEngine(rules_from(RATE), journal_samples=10_000), Store()
    warm(engine, store, 20)
    changed = RATE.replace("limit_seconds = 30", "limit_seconds = 45")
    after = RuleEngine(rules_from(changed), journal_samples=10_000)
    after.restore_states(round_trip(store))
    rate = after.instance("temp-rising", "pump-1")
    stale = after.instance("silent", "pump-1")
    assert rate is not None and stale is not None
    assert rate.snapshot() == engine.instance("temp-rising", "pump-1").snapshot()  # type: ignore[union-attr]
    assert stale.last_seen is None  # type: ignore[attr-defined]  # changed: starts clean


def test_a_damaged_journal_row_ends_the_replay_and_is_deleted(rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    engine, store = RuleEngine(rules, journal_samples=10_000), Store()
    warm(engine, store, 10)
    key = (jn.JOURNAL, jn.row_key(4))
    store[key] = store[key]._replace(data=[jn.JOURNAL_VERSION, [["pump-1", "temperature"]]])
    store[(jn.JOURNAL, "stray")] = RuleState(jn.JOURNAL, "stray", "", [1])
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.replayed == 4  # rows 0..3; 4 is damaged, so 5.. would not say what happened
    deleted = {s.asset for s in after.take_dirty() if s.rule_id == jn.JOURNAL and s.data is None}
    assert deleted == {jn.row_key(k) for k in range(9)} | {"stray"}
    # and it goes on: the window is the one of row 3 plus what comes now
    assert after.evaluate(sample("pump-1", "temperature", 60.0, 11.0))


def test_a_missing_journal_row_ends_the_replay(rules_from: RulesFrom) -> None:
    rules = rules_from(RATE)
    engine, store = RuleEngine(rules, journal_samples=10_000), Store()
    warm(engine, store, 10)
    del store[(jn.JOURNAL, jn.row_key(6))]  # lost (a salvaged file)
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.replayed == 6


def test_open_episodes_decide_after_a_replay_too(rules_from: RulesFrom) -> None:
    """A raise replayed from the journal whose episode the outbox no longer holds open is
    forgotten (the outbox is the authority), as for loaded state."""
    rules = rules_from(THRESHOLD)
    engine, store = RuleEngine(rules, journal_samples=10_000), Store()
    engine.evaluate(sample("pump-1", "vibration", 1.0, 0.0))
    commit(store, engine.take_dirty())  # the checkpoint
    (raised,) = engine.evaluate(sample("pump-1", "vibration", 8.0, 1.0))
    commit(store, engine.take_dirty())  # a journal row
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.instance("vib-high", "pump-1").active  # type: ignore[union-attr]
    after.restore([])  # closed meanwhile (not by this engine)
    assert not after.instance("vib-high", "pump-1").active  # type: ignore[union-attr]
    kept = RuleEngine(rules, journal_samples=10_000)
    kept.restore_states(round_trip(store))
    kept.restore([EpisodeState("vib-high", "pump-1", raised.episode_id, 1.0, 3)])
    assert not kept.evaluate(sample("pump-1", "vibration", 8.5, 2.0))  # no second raise


def test_without_a_journal_an_engine_keeps_no_inputs(rules_from: RulesFrom) -> None:
    """Replay tools never call take_dirty: their engines must not hold every sample."""
    engine = RuleEngine(rules_from(RATE))
    for ts in range(100):
        engine.evaluate(sample("pump-1", "temperature", 40.0, float(ts)))
    assert len(engine._journal) == 0
    with pytest.raises(ValueError, match="journal_samples"):
        RuleEngine(rules_from(RATE), journal_samples=-1)


@pytest.mark.parametrize("data", [
    [2, []],
    [1, [["a", "s", 1.0, 7, 0.0, None]]],
    [1, [["a", "s", 1.0, 0, None, None]]],
    [1, [["a", "s", "1.0", 0, 0.0, None]]],
    [1, [["a", "s", 1.0, 0, 0.0]]],
    [1, [True]],
    "not a row",
])
def test_damaged_rows_are_refused(data: object) -> None:
    with pytest.raises(StateError):
        jn.decode(data)


def test_the_setting_is_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "plantbridge.toml"
    path.write_text("[rules]\nfiles = []\nstate_journal_samples = -1\n")
    with pytest.raises(ConfigError, match="state_journal_samples"):
        load(path)


def test_a_rule_that_failed_live_fails_the_same_way_in_the_replay(
        rules_from: RulesFrom, monkeypatch: pytest.MonkeyPatch) -> None:
    """Live, the engine skips only the rule that raised (a bug) and the rules after it still
    see the sample (`on_error`, as the daemon runs it): the replay at start must do the same,
    and not stop the start."""
    from rules.threshold import RateRule

    def broken(self: RateRule, s: Sample) -> object:
        if s.value == 13.0:
            raise RuntimeError("a bug")
        return RateRule.evaluate(self, s)

    plant(monkeypatch, "RateRule", evaluate=broken)
    rules = rules_from(RATE)  # the rate rule first, then the stale rule, on one signal
    failed: list[tuple[str, float | None]] = []
    engine = RuleEngine(rules, journal_samples=10_000,
                        on_error=lambda rule, s, exc: failed.append((rule, s and s.value)))
    store = Store()
    silent = engine.instance("silent", "pump-1")
    assert silent is not None
    for ts, v in enumerate([40.0, 41.0, 13.0, 42.0]):
        engine.evaluate(sample("pump-1", "temperature", v, float(ts)))
        assert silent.last_value == v  # the stale rule saw each sample, 13.0 too
        commit(store, engine.take_dirty())
    assert failed == [("temp-rising", 13.0)]
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.replayed == 3
    for key in (("temp-rising", "pump-1"), ("silent", "pump-1")):
        assert after.instance(*key).snapshot() == engine.instance(*key).snapshot()  # type: ignore[union-attr]


def test_a_reload_checkpoints_so_no_journal_of_the_old_rules_is_left(
        rules_from: RulesFrom) -> None:
    """A journal is evaluated again with the rules of the start; rows written under other
    rules would not say what happened. So a reload stores everything and deletes them."""
    engine, store = RuleEngine(rules_from(RATE), journal_samples=10_000), Store()
    warm(engine, store, 5)
    assert [k for k in store if k[0] == jn.JOURNAL]
    changed = RATE + THRESHOLD  # a rule added: no instance of the old ones changes
    engine.replace(rules_from(changed), 5.0)
    commit(store, engine.take_dirty())
    assert not [k for k in store if k[0] == jn.JOURNAL]
    # and after a crash now, the stored state alone is the engine's
    after = RuleEngine(rules_from(changed), journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.replayed == 0
    now, before = after.instance("temp-rising", "pump-1"), engine.instance("temp-rising", "pump-1")
    assert now is not None and before is not None
    assert now.snapshot() == before.snapshot()


def test_the_journal_tells_the_marks_of_the_samples_it_holds(rules_from: RulesFrom) -> None:
    """Between checkpoints the sample marks (gateway/dedup.py) are not stored on their own: the
    journal names each batch's source, and a start reads the newest device time per (source,
    asset, signal) back from it."""
    rules = rules_from(RATE)
    engine, store = RuleEngine(rules, journal_samples=10_000), Store()
    for ts, source in [(0.0, "plc"), (1.0, "plc"), (2.0, "gw"), (3.0, "plc")]:
        engine.note_source(source)
        engine.evaluate(Sample("pump-1", "temperature", 40.0 + ts, Quality.GOOD, ts,
                               device_ts=ts + 0.5))
        engine.evaluate(Sample("pump-1", "temperature", None, Quality.BAD, ts))  # no device time
        commit(store, engine.take_dirty())
        assert engine.checkpointed is (ts == 0.0)  # the first commit is the start's checkpoint
    after = RuleEngine(rules, journal_samples=10_000)
    after.restore_states(round_trip(store))
    assert after.journal_marks == {("plc", "pump-1", "temperature"): 3.5,
                                   ("gw", "pump-1", "temperature"): 2.5}
    without = RuleEngine(rules)
    assert without.checkpointed  # no journal: every commit stores everything
    without.note_source("plc")
    assert len(without._journal) == 0
