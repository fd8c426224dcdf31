"""Replay a recording at the speed of arrays, with exactly the result of feeding every sample.

The reference replay (`rules.replay.Replayer`) hands every sample and every tick to the engine,
and almost none of them change anything: a vibration of 2.5 mm/s under a 7.1 alarm level keeps
an idle rule idle, second after second. Here every rule instance is the same real object, with
the same state machine and the same words, but it is fed only the events that can change it.
Which ones is found with array arithmetic over a whole signal at once:

- Each sample gets a *class*: (would raise if the rule is idle, would stay raised if it is
  active) — or "bad data", which cancels a pending debounce. A rate rule's class comes from the
  change within its window, an N-of-M rule's from the counts in its last M samples.
- Within a run of samples of one class the state can change at most once: at the run's first
  sample (no delay) or when its on/off delay has passed, at the first sample or tick that late.
  So a run costs its first sample, the first sample and first tick past its delay, and the
  sample before that tick (whose value a tick reports). A class that would flip back and forth
  (only possible with odd levels) is fed sample by sample.
- Muting: every mute-signal sample that changes the muting, and the first own sample after it.
- Stale rules: the ticks past the limit, and the samples either side of them.
- Combinations: the class of every sample *and tick* comes from the latest value of each
  signal and its age, so a value that ages out between samples is seen.

Rules with a window (rate, N of M) and combinations get their window or latest values set from
the arrays before each fed event, so their state is exactly what it would have been. Anything
not understood here (a rule kind added later; a rate rule on data whose time goes backwards) is
fed every event. Equivalence with the reference replay, transition for transition, is checked
by property tests on random recordings (tests/rules/test_fastreplay.py).
"""

from __future__ import annotations

import numpy as np

from gateway.model import Quality, Sample, Transition
from rules.build import RuleSet
from rules.columns import NO_VALUE, QUALITY_MASK, Columns
from rules.engine import RuleEngine
from rules.episode import Handler, RuleInstance
from rules.feedplan import Plan, plan
from rules.replay import ReplayResult, result_of
from rules.replaydata import ReplayData, prepare

_QUALITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)


def replay_columns(rule_set: RuleSet, cols: Columns, tick_seconds: float = 1.0) -> ReplayResult:
    """Run `rule_set` on `cols`, in recorded order; the same result as `rules.replay.replay`."""
    if not tick_seconds > 0:
        raise ValueError("tick_seconds must be positive")
    total = len(cols)
    data, skipped = prepare(cols, tick_seconds)
    if not len(data.ts):
        return result_of(rule_set, [], total, skipped, None, None)
    found: list[tuple[tuple[int, int, int], Transition]] = []
    work = list(enumerate(_instances(rule_set, data)))
    # Asset by asset, so each signal is gathered once; the output is sorted by time anyway.
    work.sort(key=lambda item: item[1][0].asset)
    asset = None
    for order, (inst, birth) in work:
        if inst.asset != asset:
            data.cache.clear()
            asset = inst.asset
        _run(inst, order, plan(inst, data, birth), data, found)
    found.sort(key=lambda item: item[0])
    return result_of(rule_set, [t for _, t in found], total, skipped,
                     float(data.ts[0]), float(data.ts[-1]))


def _instances(rule_set: RuleSet, data: ReplayData) -> list[tuple[RuleInstance, int]]:
    """Every rule instance in the engine's order, with the position of the sample that created
    it (-1: there from the start). Pattern rules are built when their asset first sends one of
    their own signals."""
    engine = RuleEngine(rule_set)
    out = [(inst, -1) for inst in engine.instances()]
    first: list[tuple[int, str, str]] = []
    for k, (asset, signal) in enumerate(data.keys):
        at = data.by_key.first(k)
        if at is not None:
            first.append((at, asset, signal))
    for at, asset, signal in sorted(first):
        out.extend((inst, at) for inst in engine.discover(asset, signal))
    return out


# --- feeding --------------------------------------------------------------------------------


def _run(inst: RuleInstance, order: int, planned: Plan, data: ReplayData,
         found: list[tuple[tuple[int, int, int], Transition]]) -> None:
    """Feed the planned events in recorded order; remember what they cause, and when (the
    engine's order: by position, ticks before the sample they precede, then rule order)."""
    samples, ticks, prime = planned
    if not len(samples) and not len(ticks):
        return
    handlers: dict[int, list[Handler]] = {}
    for (asset, signal), handler in inst.handlers():
        k = data.index.get((asset, signal))
        if k is not None:
            handlers.setdefault(k, []).append(handler)
    at = np.concatenate((2 * samples + 1, 2 * data.tick_pos[ticks]))
    which = np.concatenate((samples, -1 - ticks))
    sub = np.concatenate((np.zeros(len(samples), np.int64), ticks))  # ticks at one place: in order
    ts, value, quality, key, keys = data.ts, data.value, data.quality, data.key, data.keys
    for i in which[np.lexsort((sub, at))].tolist():
        if i >= 0:
            asset, signal = keys[key[i]]
            q = int(quality[i])
            sample = Sample(asset, signal, None if q & NO_VALUE else float(value[i]),
                            _QUALITY[q & QUALITY_MASK], float(ts[i]))
            if prime is not None:
                prime(inst, i, -1)
            for handler in handlers.get(int(key[i]), ()):
                t = handler(sample)
                if t is not None:
                    for one in t if isinstance(t, tuple) else (t,):
                        found.append(((2 * i + 1, 0, order), one))
        else:
            k = -1 - i
            if prime is not None:
                prime(inst, -1, k)
            t = inst.tick(float(data.tick_due[k]))
            if t is not None:
                found.append(((2 * int(data.tick_pos[k]), k, order), t))
