"""Durable rule state: a restart at any point is invisible in the transitions that follow.

The reference is an engine that never stops. The other one is cut at a random point: what
`take_dirty` reported until then (accumulated as the store keeps it: last write per key wins,
None deletes) goes through msgpack, a fresh engine takes it back (`restore_states`, then
`restore` of the open episodes) and goes on with the same events.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import EpisodeState, RuleState, Sample, Transition, TransitionKind
from rules import RuleEngine, RuleSet
from rules.engine import MUTE_MEMORY
from rules.state import StateError
from tests.rules.conftest import RulesFrom, sample
from tests.rules.test_fastreplay import DELAYS, make_samples, random_recording, rows, rule_set

Event = Sample | float | None  # a sample, a tick at that time, or "the store commits" (None)
class Store(dict[tuple[str, str], RuleState]):
    """The rule state table of the outbox, as far as these tests need it."""


def commit(store: Store, states: Sequence[RuleState]) -> None:
    """What the outbox does with `take_dirty`: last write per key wins, None deletes."""
    for state in states:
        key = (state.rule_id, state.asset)
        if state.data is None:
            store.pop(key, None)
        else:
            store[key] = state


def round_trip(store: Store) -> list[RuleState]:
    packed = msgpack.packb([[s.rule_id, s.asset, s.fingerprint, s.data] for s in store.values()])
    return [RuleState(*row) for row in msgpack.unpackb(packed)]


def step(engine: RuleEngine, event: Event) -> list[Transition]:
    if isinstance(event, Sample):
        got = engine.evaluate(event)
    elif event is None:
        return []
    else:
        got = engine.tick(event)
    return sorted(got, key=lambda t: (t.rule_id, t.asset))  # order between rules: no promise


def restart(rules: RuleSet, before: RuleEngine, store: Store, journal: int = 0) -> RuleEngine:
    """A new process: rule state from the store, open episodes from the outbox."""
    commit(store, before.take_dirty())
    episodes = [EpisodeState(ep.rule_id, ep.asset, ep.episode_id, ep.raised_at, ep.severity)
                for ep in before.open_episodes()]
    after = RuleEngine(rules, journal_samples=journal)
    after.restore_states(round_trip(store))
    after.restore(episodes)
    return after


def run_with_restarts(rules: RuleSet, events: Sequence[Event], cuts: set[int],
                      journal: int = 0) -> list[Any]:
    """`journal`: the engines' `journal_samples` (0: a snapshot of every change at every
    commit; 3: a checkpoint every few samples; 10**6: the journal since the first commit)."""
    engine, store, out = RuleEngine(rules, journal_samples=journal), Store(), []
    for i, event in enumerate(events):
        if i in cuts:
            engine = restart(rules, engine, store, journal)
        if event is None:
            commit(store, engine.take_dirty())
        out.append(step(engine, event))
    return out


def events_from(samples: list[Sample], extras: list[int]) -> list[Event]:
    """Samples with ticks and commits between them (the finite values only, as the pipeline
    lets through)."""
    out: list[Event] = []
    for s, extra in zip(samples, extras, strict=False):
        if s.value is not None and not math.isfinite(s.value):
            continue
        if extra & 1:
            out.append(s.source_ts + 0.1 * (extra >> 2))
        if extra & 2:
            out.append(None)
        out.append(s)
    return out


JOURNALS = [0, 3, 10**6]


@pytest.mark.parametrize("journal", JOURNALS)
@settings(max_examples=100, deadline=None)
@given(rows, st.lists(st.integers(0, 63), min_size=150, max_size=150),
       st.sampled_from(DELAYS), st.sampled_from(DELAYS), st.integers(2, 5),
       st.sampled_from([2.0, 5.0, 30.0]), st.sampled_from([1.0, 4.0, 20.0]),
       st.sampled_from([1.5, 4.0, 60.0]), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3))
def test_a_restart_anywhere_changes_nothing_after_it(
        journal: int, data: list[tuple[float, str, str, float | None, Any]], extras: list[int],
        on: float, off: float, m: int, window: float, limit: float, age: float,
        at: list[float]) -> None:
    rules = rule_set(on, off, m, window, limit, age)
    events = events_from(make_samples(data), extras)
    uninterrupted = run_with_restarts(rules, events, set())
    cuts = {int(f * len(events)) for f in at}
    assert run_with_restarts(rules, events, cuts, journal) == uninterrupted


@pytest.mark.parametrize("journal", JOURNALS)
@pytest.mark.parametrize("seed", range(8))
def test_restarts_in_long_recordings_change_nothing(seed: int, journal: int) -> None:
    """2,000 samples with every kind raising and clearing often; three restarts anywhere."""
    samples, rules, _ = random_recording(seed)
    r = random.Random(seed)
    events = events_from(samples, [r.randrange(64) for _ in samples])
    uninterrupted = run_with_restarts(rules, events, set())
    assert sum(map(len, uninterrupted)) > 100  # the restarts land among many transitions
    cuts = {r.randrange(len(events)) for _ in range(3)}
    assert run_with_restarts(rules, events, cuts, journal) == uninterrupted


# --- single behaviours -------------------------------------------------------------------------

DEBOUNCED = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 5
off_delay_seconds = 5
suppress_while = { signal = "maintenance", equals = 1 }

[[rule]]
id = "vib-count"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
count = 3
of_last_samples = 5

[[rule]]
id = "sensor-bad"
kind = "bad_quality"
asset = "pump-1"
signal = "vibration"
limit_seconds = 10
"""
STALE = """
[[rule]]
id = "silent"
kind = "stale"
asset_pattern = "*"
signal = "vibration"
limit_seconds = 120

[[rule]]
id = "silent-named"
kind = "stale"
asset = "pump-9"
signal = "vibration"
limit_seconds = 120
"""
PATTERN = """
[[rule]]
id = "vib-any"
kind = "threshold"
asset_pattern = "*"
signal = "vibration"
above = 7.1
suppress_while = { signal = "maintenance", equals = 1 }
"""


def test_a_delay_that_ran_out_while_stopped_fires_at_the_first_tick(
        rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    assert not engine.evaluate(sample("pump-1", "vibration", 8.0, 100.0))  # on-delay starts
    assert not engine.tick(101.0)
    later = restart(rules, engine, store)  # down from 101 s to 300 s
    got = [t for t in later.tick(300.0) if t.rule_id == "vib-high"]
    assert [(t.kind, t.ts, t.value, t.reason) for t in got] == [
        (TransitionKind.RAISED, 300.0, 8.0, "vibration 8 above 7.1 for 200 s")]
    assert not later.tick(301.0)


def test_an_off_delay_survives_a_restart(rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("pump-1", "vibration", 8.0, 100.0))
    (raised,) = [t for t in engine.tick(105.0) if t.rule_id == "vib-high"]
    engine.evaluate(sample("pump-1", "vibration", 5.0, 110.0))  # off-delay starts
    later = restart(rules, engine, store)
    assert not later.tick(114.0)
    (cleared,) = later.tick(115.0)
    assert (cleared.kind, cleared.episode_id) == (TransitionKind.CLEARED, raised.episode_id)


def test_a_mute_survives_a_restart(rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("pump-1", "maintenance", 1.0, 100.0))
    later = restart(rules, engine, store)
    later.evaluate(sample("pump-1", "vibration", 8.0, 101.0))
    assert not [t for t in later.tick(200.0) if t.rule_id == "vib-high"]


def test_an_n_of_m_window_survives_a_restart(rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    for ts, v in ((1.0, 8.0), (2.0, 3.0), (3.0, 3.0)):  # 1 of 3 high so far
        assert not [t for t in engine.evaluate(sample("pump-1", "vibration", v, ts))
                    if t.rule_id == "vib-count"]
    later = restart(rules, engine, store)
    assert not later.evaluate(sample("pump-1", "vibration", 8.0, 4.0))  # 2 of the last 5
    (t,) = [t for t in later.evaluate(sample("pump-1", "vibration", 8.0, 5.0))
            if t.rule_id == "vib-count"]
    assert t.reason == "vibration above 7.1 in 3 of the last 5 samples (now 8)"


def test_samples_that_change_nothing_leave_nothing_to_store(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(DEBOUNCED + PATTERN))
    engine.evaluate(sample("pump-1", "vibration", 2.0, 1.0))
    engine.evaluate(sample("pump-1", "maintenance", 0.0, 1.0))
    assert {(s.rule_id, s.asset) for s in engine.take_dirty()} == {("vib-any", "pump-1"),
                                                                 (MUTE_MEMORY, "pump-1")}
    for ts in range(2, 50):
        engine.evaluate(sample("pump-1", "vibration", 2.0 + ts / 100, float(ts)))
        engine.evaluate(sample("pump-1", "maintenance", 0.0, float(ts)))
        engine.tick(ts + 0.5)
    assert engine.take_dirty() == []
    engine.evaluate(sample("pump-1", "vibration", 8.0, 50.0))  # on-delay and N-of-M start
    assert {s.rule_id for s in engine.take_dirty()} == {"vib-high", "vib-count", "vib-any"}
    assert engine.take_dirty() == []


def test_each_changed_instance_is_stored_once_per_group_in_every_group(
        rules_from: RulesFrom) -> None:
    """The dirty set (`rules.episode.Changed`, a list and a mark per instance): an instance
    that changes many times in a group is stored once; after a group it is stored again when
    it changes again; two engines over the same rules keep their own."""
    rules = rules_from(DEBOUNCED + PATTERN)
    engine, other = RuleEngine(rules), RuleEngine(rules)
    for ts in range(1, 4):
        engine.evaluate(sample("pump-1", "vibration", 8.0 + ts, float(ts)))
        engine.evaluate(sample("pump-2", "vibration", 8.0 + ts, float(ts)))
    other.evaluate(sample("pump-1", "vibration", 8.0, 1.0))
    first = [(s.rule_id, s.asset) for s in engine.take_dirty()]
    assert len(first) == len(set(first)) and {a for _, a in first} == {"pump-1", "pump-2"}
    assert engine.take_dirty() == []
    engine.evaluate(sample("pump-2", "vibration", 2.0, 4.0))  # clears: a change to store
    assert {a for _, a in ((s.rule_id, s.asset) for s in engine.take_dirty())} == {"pump-2"}
    assert {s.asset for s in other.take_dirty()} == {"pump-1"}  # untouched by `engine`'s


def test_the_dirty_set_keeps_each_instance_once_until_cleared(rules_from: RulesFrom) -> None:
    from rules.episode import NOWHERE, Changed

    engine = RuleEngine(rules_from(DEBOUNCED))
    engine.evaluate(sample("pump-1", "vibration", 2.0, 1.0))
    engine.evaluate(sample("pump-2", "vibration", 2.0, 1.0))
    a, b = engine.instances()[:2]
    NOWHERE.add(a)  # where an instance outside an engine reports: it keeps nothing
    assert a not in NOWHERE and not NOWHERE and list(NOWHERE) == []
    changed = Changed()
    for inst in (b, a, b, a):
        changed.add(inst)
    assert list(changed) == [b, a] and len(changed) == 2 and a in changed
    changed.clear()
    assert a not in changed and not changed and list(changed) == []
    changed.add(a)
    changed.add(b)
    changed.discard(a)
    assert list(changed) == [b] and a not in changed and len(changed) == 1
    changed.discard(a)  # not in it: nothing happens
    assert list(changed) == [b]
    changed.discard(b)
    changed.add(b)  # discarded, then changed again: in it once
    changed.add(a)
    assert list(changed) == [b, a] and len(changed) == 2
    changed.discard(a)
    changed.discard(b)
    assert not changed and list(changed) == []


def test_stale_never_raises_for_an_asset_that_never_reported(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(STALE))
    engine.evaluate(sample("fan-1", "temperature", 20.0, 0.0))  # another signal only
    for now in range(1, 1000, 10):
        assert not engine.tick(float(now))
    assert {(i.rule_id, i.asset) for i in engine.instances()} == {("silent-named", "pump-9")}


def test_stale_watching_survives_a_restart(rules_from: RulesFrom) -> None:
    rules = rules_from(STALE)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("fan-1", "vibration", 1.0, 10.0))
    later = restart(rules, engine, store)  # fan-1 was heard: still watched, from 10 s
    assert not later.tick(130.0)
    (t,) = later.tick(131.0)
    assert (t.kind, t.rule_id, t.asset) == (TransitionKind.RAISED, "silent", "fan-1")


def test_a_pattern_rule_needs_its_own_signal(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(PATTERN))
    engine.evaluate(sample("pump-1", "maintenance", 1.0, 1.0))  # a mute signal: builds nothing
    engine.evaluate(sample("pump-1", "temperature", 80.0, 1.0))
    assert engine.instances() == []
    # Only the mute is remembered (and stored), for when the asset sends vibration.
    assert engine.take_dirty() == [RuleState(MUTE_MEMORY, "pump-1", "",
                                             [1, [["maintenance", 1.0]]])]
    assert not engine.evaluate(sample("pump-1", "vibration", 9.0, 2.0))  # built, and muted
    assert [(i.rule_id, i.asset) for i in engine.instances()] == [("vib-any", "pump-1")]


def test_the_cap_refuses_counts_and_costs_one_lookup(rules_from: RulesFrom,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RuleEngine(rules_from(PATTERN), max_instances_per_rule=3)
    for n in range(10):
        engine.evaluate(sample(f"pump-{n}", "vibration", 1.0, 1.0))
    assert len(engine.instances()) == 3
    assert engine.refused_instances() == {"vib-any": 7}
    calls: list[tuple[Any, ...]] = []

    def discover(*args: Any) -> list[Any]:
        calls.append(args[1:])
        return []

    monkeypatch.setattr(RuleEngine, "discover", discover)
    assert not engine.evaluate(sample("pump-9", "vibration", 99.0, 2.0))
    assert calls == []  # a refused asset is a cached miss, not a new attempt
    assert engine.refused_instances() == {"vib-any": 7}


def test_state_that_does_not_fit_starts_clean(rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine = RuleEngine(rules)
    engine.evaluate(sample("pump-1", "vibration", 8.0, 100.0))
    states = {s.rule_id: s for s in engine.take_dirty()}
    good = states["vib-high"]
    bad = [RuleState("vib-high", "pump-1", good.fingerprint, [99, *good.data[1:]]),  # version
           RuleState("vib-count", "pump-1", states["vib-count"].fingerprint, [1, "x"]),
           RuleState("sensor-bad", "pump-1", "other-definition", good.data)]
    later = RuleEngine(rules)
    assert later.restore_states(bad) == 0
    assert not later.tick(200.0)  # nothing pending: clean
    rewritten = {s.rule_id: s.data for s in later.take_dirty()}
    assert set(rewritten) == {"vib-high", "vib-count", "sensor-bad"}  # clean state replaces
    assert RuleEngine(rules).restore_states([good]) == 1


def test_state_of_rules_that_are_gone_is_forgotten(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(DEBOUNCED))
    gone = [RuleState("no-such-rule", "pump-1", "f", [1]),
            RuleState("vib-high", "pump-2", "f", [1])]  # no longer covers pump-2
    assert engine.restore_states(gone) == 0
    assert {(s.rule_id, s.asset, s.data) for s in engine.take_dirty()} == {
        ("no-such-rule", "pump-1", None), ("vib-high", "pump-2", None)}


def test_reload_keeps_forgets_and_rewrites(rules_from: RulesFrom) -> None:
    engine = RuleEngine(rules_from(DEBOUNCED + PATTERN))
    engine.evaluate(sample("pump-1", "vibration", 8.0, 100.0))
    engine.take_dirty()
    changed = DEBOUNCED.replace("of_last_samples = 5", "of_last_samples = 6")
    removed = changed.split("[[rule]]\nid = \"sensor-bad\"")[0]
    assert not engine.replace(rules_from(removed + PATTERN), 101.0)
    got = {(s.rule_id, s.asset): s.data for s in engine.take_dirty()}
    assert set(got) == {("vib-count", "pump-1"), ("sensor-bad", "pump-1")}  # not vib-high
    assert got[("sensor-bad", "pump-1")] is None
    assert got[("vib-count", "pump-1")] is not None
    # The unchanged rule kept its pending on-delay; the pattern rule kept its instance.
    assert [t.rule_id for t in engine.tick(105.0)] == ["vib-high"]
    assert ("vib-any", "pump-1") in {(i.rule_id, i.asset) for i in engine.instances()}


def test_count_rule_assumes_the_window_in_alarm_only_without_state(
        rules_from: RulesFrom) -> None:
    rules = rules_from(DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    for ts in (1.0, 2.0, 3.0):
        engine.evaluate(sample("pump-1", "vibration", 8.0, ts))  # vib-count raises at 3 s
    for ts in (4.0, 5.0):
        engine.evaluate(sample("pump-1", "vibration", 1.0, ts))  # 3 of 5 still high
    later = restart(rules, engine, store)
    (t,) = [t for t in later.evaluate(sample("pump-1", "vibration", 1.0, 6.0))
            if t.rule_id == "vib-count"]  # 2 of 5 (5 of 5 after a restart without state)
    assert t.kind is TransitionKind.CLEARED


def test_a_clear_after_a_restart_repeats_the_request_of_its_raise(rules_from: RulesFrom) -> None:
    rules = rules_from(PATTERN.replace('signal = "vibration"',
                                       'signal = "vibration"\ntitle = "{asset} at {value} mm/s"'))
    engine, store = RuleEngine(rules), Store()
    (raised,) = engine.evaluate(sample("pump-1", "vibration", 9.5, 1.0))
    later = restart(rules, engine, store)
    (cleared,) = later.evaluate(sample("pump-1", "vibration", 2.0, 2.0))
    assert cleared.request == raised.request
    assert cleared.request.title == "pump-1 at 9.5 mm/s"


def test_the_outbox_decides_which_episodes_are_open(rules_from: RulesFrom) -> None:
    """State that holds an episode the outbox does not know open (say, state written before a
    clear that was committed without it) must not keep the rule raised for good."""
    rules = rules_from(PATTERN)
    engine = RuleEngine(rules)
    engine.evaluate(sample("pump-1", "vibration", 9.0, 1.0))
    later = RuleEngine(rules)
    store = Store()
    commit(store, engine.take_dirty())
    assert later.restore_states(round_trip(store)) == 1
    later.restore([])  # the outbox holds nothing open
    assert later.open_episodes() == []
    later.evaluate(sample("pump-1", "vibration", 1.0, 2.0))
    (t,) = later.evaluate(sample("pump-1", "vibration", 9.0, 3.0))
    assert t.kind is TransitionKind.RAISED


def test_restored_state_is_not_written_back_unchanged(rules_from: RulesFrom) -> None:
    rules = rules_from(PATTERN + DEBOUNCED)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("pump-7", "vibration", 1.0, 1.0))
    engine.evaluate(sample("pump-1", "vibration", 8.0, 1.0))
    later = restart(rules, engine, store)
    assert later.take_dirty() == []


def damaged_copies(data: list[Any]) -> list[list[Any]]:
    """`data` with one item (or one item of what the kind adds) replaced by something wrong."""
    kind_part = data[8] if isinstance(data[8], list) else []
    out = []
    for wrong in ("x", [None, "x"], float("nan")):
        out += [[*data[:i], wrong, *data[i + 1:]] for i in range(1, len(data))]
        out += [[*data[:8], [*kind_part[:j], wrong, *kind_part[j + 1:]]]
                for j in range(len(kind_part))]
    return out


def test_every_kind_loads_its_snapshot_and_refuses_damaged_data_whole() -> None:
    """Each kind takes back its own (msgpack-round-tripped) snapshot; damaged data, anywhere in
    it, raises StateError and leaves the instance exactly as clean as it was."""
    samples, rules, _ = random_recording(3)
    engine = RuleEngine(rules)
    for s in samples[:1200]:
        if s.value is None or math.isfinite(s.value):
            engine.evaluate(s)
            engine.tick(s.source_ts)
    kinds = set()
    for inst in engine.instances():
        data = msgpack.unpackb(msgpack.packb(inst.snapshot()))
        rule = rules.get(inst.rule_id)
        assert rule is not None
        fresh = rule.build(inst.asset)
        clean = fresh.snapshot()
        fresh.load(data)
        assert msgpack.unpackb(msgpack.packb(fresh.snapshot())) == data
        kinds.add(type(inst).__name__)
        for damaged in damaged_copies(data):
            other = rule.build(inst.asset)
            try:
                other.load(damaged)
            except StateError:
                assert other.snapshot() == clean, (inst.rule_id, damaged)
    assert len(kinds) == 7  # every kind took part



def test_a_stale_rule_gives_its_sensor_a_grace_after_a_long_downtime(
        rules_from: RulesFrom) -> None:
    """Down for longer than the limit: the downtime is no evidence of silence, so the sensor
    gets the grace to report; one that stays silent is raised once the grace is over."""
    rules = rules_from(STALE)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("fan-1", "vibration", 1.0, 10.0))
    later = restart(rules, engine, store)
    start = 10.0 + 600  # ten minutes down; the limit is 120 s
    later.resume(start, stale_grace_seconds=30)
    assert not later.tick(start + 1) and not later.tick(start + 30)
    (t,) = later.tick(start + 31)
    assert (t.kind, t.rule_id, t.asset) == (TransitionKind.RAISED, "silent", "fan-1")


def test_the_grace_does_not_postpone_a_deadline_still_ahead(rules_from: RulesFrom) -> None:
    rules = rules_from(STALE)
    engine, store = RuleEngine(rules), Store()
    engine.evaluate(sample("fan-1", "vibration", 1.0, 10.0))
    later = restart(rules, engine, store)
    later.resume(100.0, stale_grace_seconds=30)  # deadline 130 is after 100 + 30
    assert not later.tick(130.0)
    (t,) = later.tick(131.0)
    assert t.kind == TransitionKind.RAISED
