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

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.model import Quality, Sample, Transition
from rules.build import RuleSet
from rules.columns import BAD, NO_VALUE, Columns
from rules.engine import RuleEngine
from rules.episode import Handler, RuleInstance
from rules.replay import ReplayResult, result_of
from rules.threshold import BandThreshold, CountThreshold, InsideThreshold, RateRule
from rules.watch import BadQualityRule, CombinationRule, StaleRule

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.int8]
# (sample positions to feed, tick indexes to feed, what to set before each fed event)
Primer = Callable[[RuleInstance, int, int], None]  # (instance, sample position or -1, tick or -1)
Plan = tuple[Ints, Ints, Primer | None]

BAD_DATA = 4  # class of a sample that is bad (or has no value): cancels a pending debounce
_EMPTY = np.zeros(0, np.int64)
_QUALITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)


@dataclass(slots=True)
class _Data:
    """The evaluated samples (what the pipeline would not reject), and the tick grid."""

    keys: tuple[tuple[str, str], ...]
    key: npt.NDArray[np.uint32]
    ts: Floats
    value: Floats
    quality: npt.NDArray[np.uint8]  # 0, 1, 2
    none: Bools  # value is None
    bad: Bools  # BAD quality or no value: neither raises nor clears a process alarm
    tick_due: Floats  # data time of tick k
    tick_pos: Ints  # tick k runs just before the sample at this position
    by_key: _ByKey
    index: dict[tuple[str, str], int]
    cache: dict[tuple[str, str], _Signal]  # the assets being worked on

    def of(self, asset: str, signal: str) -> Ints:
        k = self.index.get((asset, signal))
        return _EMPTY if k is None else self.by_key.positions(k)

    def signal(self, asset: str, signal: str) -> _Signal:
        """One signal's samples, gathered once for every rule of its asset."""
        got = self.cache.get((asset, signal))
        if got is None:
            pos = self.of(asset, signal)
            got = self.cache[(asset, signal)] = _Signal(pos, self.ts[pos], self.value[pos],
                                                        self.bad[pos])
        return got


@dataclass(frozen=True, slots=True)
class _Signal:
    pos: Ints  # positions in the recording, ascending
    ts: Floats
    value: Floats
    bad: Bools


def replay_columns(rule_set: RuleSet, cols: Columns, tick_seconds: float = 1.0) -> ReplayResult:
    """Run `rule_set` on `cols`, in recorded order; the same result as `rules.replay.replay`."""
    if not tick_seconds > 0:
        raise ValueError("tick_seconds must be positive")
    total = len(cols)
    base = (cols.quality & 3).astype(np.uint8)
    none = (cols.quality & NO_VALUE) != 0
    keep = (base == BAD) | (~none & np.isfinite(cols.value))
    all_kept = bool(keep.all())
    data = _prepare(cols, keep, all_kept, base, none, tick_seconds)
    n = len(data.ts)
    if n == 0:
        return result_of(rule_set, [], total, total, None, None)
    found: list[tuple[tuple[int, int, int], Transition]] = []
    work = list(enumerate(_instances(rule_set, data)))
    # Asset by asset, so each signal is gathered once; the output is sorted by time anyway.
    work.sort(key=lambda item: item[1][0].asset)
    asset = None
    for order, (inst, birth) in work:
        if inst.asset != asset:
            data.cache.clear()
            asset = inst.asset
        _run(inst, order, _plan(inst, data, birth), data, found)
    found.sort(key=lambda item: item[0])
    return result_of(rule_set, [t for _, t in found], total, total - n,
                     float(data.ts[0]), float(data.ts[-1]))


def _prepare(cols: Columns, keep: Bools, all_kept: bool, base: npt.NDArray[np.uint8],
             none: Bools, step: float) -> _Data:
    if all_kept:
        key, ts, value, quality = cols.key, cols.ts, cols.value, base
    else:
        key, ts, value, quality, none = (cols.key[keep], cols.ts[keep], cols.value[keep],
                                         base[keep], none[keep])
    n = len(ts)
    # Ticks, as `Replayer.feed` makes them: the first sample sets the grid, and before each later
    # sample every tick of the grid that it has passed runs.
    due: Floats = np.zeros(0)
    pos: Ints = _EMPTY
    if n > 1:
        k0 = math.floor(float(ts[0]) / step) + 1
        later = ts[1:]
        # The running maximum of the time, cheap to skip when time never goes backwards.
        later_max = later if bool(np.all(later[1:] >= later[:-1])) else np.maximum.accumulate(later)
        last = float(later_max[-1])
        if k0 * step < last:
            ks = np.arange(k0, max(k0, math.ceil(last / step)) + 2, dtype=np.int64)
            due = ks.astype(np.float64) * step
            due = due[due < last]
            pos = np.searchsorted(later_max, due, side="right").astype(np.int64) + 1
    return _Data(cols.keys, key, ts, value, quality, none, none | (quality == BAD), due, pos,
                 _ByKey(key, len(cols.keys)), {k: i for i, k in enumerate(cols.keys)}, {})


class _ByKey:
    """Sample positions per key: a stable sort by key, done in cache-sized chunks (one sort of
    86 M keys is several times slower), then each key's slices picked from every chunk."""

    __slots__ = ("count", "order", "start")

    def __init__(self, key: npt.NDArray[np.uint32], nkeys: int) -> None:
        n = len(key)
        chunk = max(1 << 16, 64 * nkeys)
        small = key.astype(np.uint16) if nkeys <= 1 << 16 else key  # a radix sort
        self.order: Ints = np.empty(n, np.int64)
        counts = []
        for lo in range(0, n, chunk):
            part = small[lo:lo + chunk]
            got = self.order[lo:lo + chunk]
            got[:] = np.argsort(part, kind="stable")
            got += lo
            counts.append(np.bincount(part, minlength=nkeys))
        self.count: Ints = np.array(counts, np.int64).reshape(len(counts), nkeys)  # chunk x key
        first_of_chunk = np.arange(len(self.count), dtype=np.int64)[:, None] * chunk
        self.start: Ints = first_of_chunk + np.cumsum(self.count, axis=1) - self.count

    def positions(self, k: int) -> Ints:
        lens, starts = self.count[:, k], self.start[:, k]
        some = lens > 0
        lens, starts = lens[some], starts[some]
        ends = np.cumsum(lens)
        total = int(ends[-1]) if len(ends) else 0
        return self.order[np.repeat(starts - (ends - lens), lens) + np.arange(total)]

    def first(self, k: int) -> int | None:
        """The first position of key k, if it has any."""
        chunks = np.flatnonzero(self.count[:, k])
        return None if not len(chunks) else int(self.order[self.start[chunks[0], k]])


def _instances(rule_set: RuleSet, data: _Data) -> list[tuple[RuleInstance, int]]:
    """Every rule instance in the engine's order, with the position of the sample that created
    it (-1: there from the start). Pattern rules are built when their asset first sends data."""
    engine = RuleEngine(rule_set)
    out = [(inst, -1) for inst in engine.instances()]
    first: dict[str, int] = {}
    for k, (asset, _) in enumerate(data.keys):
        at = data.by_key.first(k)
        if at is not None:
            first[asset] = min(first.get(asset, at), at)
    for asset, at in sorted(first.items(), key=lambda item: item[1]):
        known = len(out)
        engine.discover(asset)
        out.extend((inst, at) for inst in engine.instances()[known:])
    return out


# --- feeding --------------------------------------------------------------------------------


def _run(inst: RuleInstance, order: int, plan: Plan, data: _Data,
         found: list[tuple[tuple[int, int, int], Transition]]) -> None:
    """Feed the planned events in recorded order; remember what they cause, and when."""
    samples, ticks, prime = plan
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
    ts, value, quality, none, key, keys = (data.ts, data.value, data.quality, data.none,
                                           data.key, data.keys)
    for i in which[np.lexsort((sub, at))].tolist():
        if i >= 0:
            asset, signal = keys[key[i]]
            sample = Sample(asset, signal, None if none[i] else float(value[i]),
                            _QUALITY[quality[i]], float(ts[i]))
            if prime is not None:
                prime(inst, i, -1)
            for handler in handlers.get(int(key[i]), ()):
                t = handler(sample)
                if t is not None:
                    found.append(((2 * i + 1, 0, order), t))
        else:
            k = -1 - i
            if prime is not None:
                prime(inst, -1, k)
            t = inst.tick(float(data.tick_due[k]))
            if t is not None:
                found.append(((2 * int(data.tick_pos[k]), k, order), t))


def _plan(inst: RuleInstance, data: _Data, birth: int) -> Plan:
    """The events this instance must see: the planner of its kind, or all of them."""
    first_tick = int(np.searchsorted(data.tick_pos, birth, side="right"))
    ticks = np.arange(first_tick, len(data.tick_pos), dtype=np.int64)
    if not inst.needs_tick():
        ticks = _EMPTY
    mute = _mute_changes(inst, data)
    own = data.signal(inst.asset, inst.signal)
    kind = type(inst)
    if kind is CombinationRule:
        assert isinstance(inst, CombinationRule)
        return _combination(inst, data, ticks, mute)
    if kind is StaleRule:
        assert isinstance(inst, StaleRule)
        return _stale(inst, data, own, ticks, mute)
    if kind in (BandThreshold, InsideThreshold, BadQualityRule):
        return (*_runs(_classes(inst, own), own, data, inst, ticks, mute), None)
    if kind is CountThreshold:
        assert isinstance(inst, CountThreshold)
        codes, prime = _count(inst, own)
        return (*_runs(codes, own, data, inst, ticks, mute), prime)
    if kind is RateRule:
        assert isinstance(inst, RateRule)
        got = _rate(inst, own)
        if got is not None:
            return (*_runs(got[0], own, data, inst, ticks, mute), got[1])
    return _everything(inst, data, ticks)


def _everything(inst: RuleInstance, data: _Data, ticks: Ints) -> Plan:
    fed = [data.of(asset, signal) for asset, signal in inst.keys()]  # noqa: SIM118 (a method)
    return np.unique(np.concatenate([_EMPTY, *fed])), ticks, None


def _mute_changes(inst: RuleInstance, data: _Data) -> Ints:
    """Positions of the mute-signal samples that change whether the rule is muted."""
    found = [_EMPTY]
    for signal, equals in inst.suppress_while():
        sig = data.signal(inst.asset, signal)
        good = ~sig.bad
        usable = sig.pos[good]
        if not len(usable):
            continue
        muted = sig.value[good] == equals
        change = np.ones(len(usable), np.bool_)
        change[1:] = muted[1:] != muted[:-1]
        found.append(usable[change])
    return np.unique(np.concatenate(found))


# --- runs of one class (threshold, N of M, rate, bad quality) --------------------------------


def _classes(inst: RuleInstance, own: _Signal) -> Codes:
    """Class per sample: bit 0 = raises when idle, bit 1 = holds when active; 4 = bad data."""
    v, bad = own.value, own.bad
    if isinstance(inst, BadQualityRule):
        return np.where(bad, 3, 0).astype(np.int8)
    assert isinstance(inst, (BandThreshold, InsideThreshold))
    with np.errstate(invalid="ignore"):
        if isinstance(inst, InsideThreshold):
            raise_ = (inst.lo <= v) & (v <= inst.hi)
            hold = ~((v < inst.clo) | (v > inst.chi))
        else:
            raise_ = (v > inst.hi) | (v < inst.lo)
            hold = ~((inst.clo <= v) & (v <= inst.chi))
    return np.where(bad, BAD_DATA, raise_ + 2 * hold.astype(np.int8)).astype(np.int8)


def _runs(codes: Codes, sig: _Signal, data: _Data, inst: RuleInstance, ticks: Ints,
          mute: Ints) -> tuple[Ints, Ints]:
    """Samples and ticks to feed for a rule whose decision is a function of the class."""
    own, t = sig.pos, sig.ts
    n = len(own)
    if n == 0:
        return _EMPTY, _EMPTY  # without own samples nothing can raise or clear
    start = np.ones(n, np.bool_)
    start[1:] = codes[1:] != codes[:-1]
    feed = start | (codes == 1)  # raises when idle, clears when active: may flip every sample
    # A class that opposes the state waits out the on delay (raise) or the off delay (clear).
    delay = np.array([inst.off_delay, 0.0, 0.0, inst.on_delay, 0.0])[codes]
    # A debounce starts where a run starts, or (raising) at the first sample after the muting
    # changed; a clear's debounce is not touched by muting. So runs are cut both ways.
    starts = [start]
    if len(mute):
        cut = start.copy()
        after = np.searchsorted(own, mute, side="right")
        cut[after[after < n]] = True
        feed |= cut
        starts.append(cut)
    fed_ticks = [_EMPTY]
    for begin in starts:
        run = np.cumsum(begin) - 1
        first = np.flatnonzero(begin)
        late = np.flatnonzero((delay > 0) & (t - t[first][run] >= delay))
        if len(late):
            feed[_first_of_each(late, run)] = True
        opposing = first[delay[first] > 0]
        if len(ticks) and len(opposing):
            got, before = _first_ticks_past(opposing, own, t, delay, first, data, ticks)
            fed_ticks.append(got)
            feed[before] = True
    return np.union1d(own[feed], mute), np.unique(np.concatenate(fed_ticks))


def _first_ticks_past(opposing: Ints, own: Ints, t: Floats, delay: Floats, first: Ints,
                      data: _Data, ticks: Ints) -> tuple[Ints, Ints]:
    """Per run that could flip after a delay: the first tick of the run at or past the delay,
    and the own sample just before that tick."""
    due, tpos = data.tick_due[ticks], data.tick_pos[ticks]
    since, d = t[opposing], delay[opposing]
    lo = np.searchsorted(tpos, own[opposing], side="right")  # ticks after the run's first sample
    c = np.maximum(lo, np.searchsorted(due, since + d, side="left") - 1)
    last = len(due) - 1
    for _ in range(3):  # the sum above is rounded; step to the first tick that is really late
        cc = np.minimum(c, last)
        c = np.where((c <= last) & ~(due[cc] - since >= d), c + 1, c)
    cc = np.minimum(c, last)
    ok = (c <= last) & (due[cc] - since >= d)
    nxt = np.searchsorted(first, opposing, side="right")  # the next run's first sample
    bound = np.where(nxt < len(first), own[first[np.minimum(nxt, len(first) - 1)]],
                     np.iinfo(np.int64).max)
    ok &= tpos[cc] <= bound
    chosen = cc[ok]
    before = np.searchsorted(own, tpos[chosen], side="left") - 1
    return ticks[chosen], before[before >= 0]


def _first_of_each(found: Ints, group: Ints) -> Ints:
    """Of ascending positions, the first one in each group (groups ascend with position)."""
    if not len(found):
        return found
    g = group[found]
    first = np.ones(len(found), np.bool_)
    first[1:] = g[1:] != g[:-1]
    return found[first]


def _count(inst: CountThreshold, sig: _Signal) -> tuple[Codes, Primer]:
    own, v, bad = sig.pos, sig.value, sig.bad
    good_v = v[~bad]
    with np.errstate(invalid="ignore"):
        if inst.inverted:
            alarm = (inst.lo <= good_v) & (good_v <= inst.hi)
            held = ~((good_v < inst.clo) | (good_v > inst.chi))
        else:
            alarm = (good_v > inst.hi) | (good_v < inst.lo)
            held = ~((inst.clo <= good_v) & (good_v <= inst.chi))
    marks = alarm.astype(np.int64) + 2 * held.astype(np.int64)
    m = len(inst.ring)
    n_alarm = _window_sum(alarm.astype(np.int64), m)
    n_held = _window_sum(held.astype(np.int64), m)
    good_codes = ((n_alarm >= inst.n).astype(np.int8)
                  + 2 * (n_held >= inst.n).astype(np.int8))
    codes = np.full(len(own), BAD_DATA, np.int8)
    codes[~bad] = good_codes
    good_pos = own[~bad]

    def prime(rule: RuleInstance, i: int, tick: int) -> None:
        """The ring as it is before good sample number c: the last M marks, oldest at the slot."""
        if i < 0:
            return
        c = int(np.searchsorted(good_pos, i))
        if c >= len(good_pos) or good_pos[c] != i:
            return  # a bad sample or a mute sample: the ring is not used
        assert isinstance(rule, CountThreshold)
        ring = [0] * m
        for back in range(1, m + 1):
            if c - back >= 0:
                ring[(c - back) % m] = int(marks[c - back])
        rule.ring, rule.slot = ring, c % m
        rule.n_alarm = sum(x & 1 for x in ring)
        rule.n_held = sum(x >> 1 for x in ring)

    return codes, prime


def _window_sum(x: Ints, m: int) -> Ints:
    """Sum over the last m values, this one included (fewer at the start)."""
    c = np.concatenate(([0], np.cumsum(x)))
    idx = np.arange(1, len(c))
    return c[idx] - c[np.maximum(idx - m, 0)]


def _rate(inst: RateRule, sig: _Signal) -> tuple[Codes, Primer] | None:
    own, bad = sig.pos, sig.bad
    good_pos = own[~bad]
    t, v = sig.ts[~bad], sig.value[~bad]
    if len(t) and bool(np.any(np.diff(t) < 0)):
        return None  # time goes backwards: the window is not a slice; feed every sample
    start = np.searchsorted(t, t - inst.window, side="left")
    d = v - v[start]
    codes = np.full(len(own), BAD_DATA, np.int8)
    if len(t):
        rises = (d > inst.hi) | (d < inst.lo)
        holds = ~((inst.clo <= d) & (d <= inst.chi)) | (t - t[0] < inst.window)
        codes[~bad] = rises.astype(np.int8) + 2 * holds.astype(np.int8)

    def prime(rule: RuleInstance, i: int, tick: int) -> None:
        """The window as it is before this sample: only its oldest sample matters."""
        if i < 0:
            return
        c = int(np.searchsorted(good_pos, i))
        if c >= len(good_pos) or good_pos[c] != i:
            return
        assert isinstance(rule, RateRule)
        s = int(start[c])
        rule.history = deque([(float(t[s]), float(v[s]))] if s < c else ())

    return codes, prime


# --- stale ----------------------------------------------------------------------------------


def _stale(inst: StaleRule, data: _Data, sig: _Signal, ticks: Ints, mute: Ints) -> Plan:
    """Ticks that find the signal silent past the limit, and the samples either side."""
    if not len(ticks):
        return _EMPTY, _EMPTY, None  # it raises only on a tick
    due, tpos = data.tick_due[ticks], data.tick_pos[ticks]
    own, t = sig.pos, sig.ts
    before = np.searchsorted(own, tpos, side="left")  # own samples before each tick
    seen = np.where(before > 0, t[np.maximum(before - 1, 0)] if len(own) else due[0], due[0])
    late = np.flatnonzero(due - seen > inst.limit)
    if not inst.suppress_while():
        late = _first_of_each(late, before)  # the first late tick of a silence raises
    fed = late if before[0] > 0 else np.union1d([0], late)
    around = np.concatenate((before[late] - 1, before[late]))
    around = around[(around >= 0) & (around < len(own))]
    return np.union1d(own[around], mute), ticks[fed], None


# --- combinations ---------------------------------------------------------------------------


def _combination(inst: CombinationRule, data: _Data, ticks: Ints, mute: Ints) -> Plan:
    """Class of every sample and tick from the latest value per signal and its age."""
    sigs = [data.signal(inst.asset, s) for s in inst.index]
    own = np.concatenate([_EMPTY, *(g.pos for g in sigs)])
    if not len(own):
        return _EMPTY, _EMPTY, None
    by_pos = np.argsort(own, kind="stable")
    own = own[by_pos]
    source = np.concatenate([np.full(len(g.pos), i, np.int8) for i, g in enumerate(sigs)])[by_pos]
    own_ts = np.concatenate([g.ts for g in sigs])[by_pos]
    # Samples and ticks in the order they happen: tick k runs just before sample tick_pos[k].
    tpos = data.tick_pos[ticks]
    n = len(own) + len(ticks)
    at_sample = np.arange(len(own)) + np.searchsorted(tpos, own, side="right")
    at_tick = np.arange(len(ticks)) + np.searchsorted(own, tpos, side="left")
    is_tick = np.zeros(n, np.bool_)
    is_tick[at_tick] = True
    when, which, signal_of = np.empty(n), np.empty(n, np.int64), np.full(n, -1, np.int8)
    when[at_sample], when[at_tick] = own_ts, data.tick_due[ticks]
    which[at_sample], which[at_tick] = own, ticks
    signal_of[at_sample] = source
    # Per condition, at every event: when its signal last had a usable value, and that value.
    latest: list[tuple[Floats, Floats, Bools]] = []
    index = list(inst.index)
    for signal, op, level in inst.conditions:
        number = index.index(signal)
        sig = sigs[number]
        j = np.cumsum(signal_of == number) - 1  # its latest sample at or before each event
        jj = np.maximum(j, 0)
        usable = (j >= 0) & ~sig.bad[jj] if len(sig.pos) else np.zeros(n, np.bool_)
        seen = np.where(usable, sig.ts[jj], -np.inf) if len(sig.pos) else np.full(n, -np.inf)
        value = np.where(usable, sig.value[jj], np.nan) if len(sig.pos) else np.full(n, np.nan)
        with np.errstate(invalid="ignore"):
            ok = (value > level if op == "above" else value < level if op == "below"
                  else value == level)
        latest.append((seen, value, ok & usable))
    # The first event after each muting change.
    after_mute = (np.searchsorted(own, mute, side="right")
                  + np.searchsorted(tpos, mute, side="right"))
    fresh = np.array([s >= when - inst.max_age for s, _, _ in latest])
    verdict = np.array([ok for _, _, ok in latest])
    unknown = ~fresh.all(axis=0)
    if inst.need_all:
        decided_false = (fresh & ~verdict).any(axis=0)
        codes = np.where(decided_false, 0, np.where(unknown, 2, 3)).astype(np.int8)
    else:
        decided_true = (fresh & verdict).any(axis=0)
        codes = np.where(decided_true, 3, np.where(unknown, 2, 0)).astype(np.int8)
    feed = _combination_events(inst, codes, when, is_tick, after_mute)
    fed = np.flatnonzero(feed)
    slot = {int(which[e]) if not is_tick[e] else -1 - int(which[e]): int(e) for e in fed}

    def prime(rule: RuleInstance, i: int, tick: int) -> None:
        e = slot.get(i if i >= 0 else -1 - tick)
        if e is None:
            return  # a mute sample
        assert isinstance(rule, CombinationRule)
        for c, (seen, value, ok) in enumerate(latest):
            rule.seen[c] = float(seen[e])
            rule.values[c] = None if math.isnan(value[e]) else float(value[e])
            rule.verdict[c] = bool(ok[e])

    samples = which[fed[~is_tick[fed]]]
    return np.union1d(samples, mute), which[fed[is_tick[fed]]], prime


def _combination_events(inst: CombinationRule, codes: Codes, when: Floats, is_tick: Bools,
                        after_mute: Ints) -> Bools:
    """Which merged events to feed: the first sample of a run (also after a tick that changed
    the class, since that tick cancelled any pending debounce), such ticks themselves, and the
    first event of a run past its delay."""
    n = len(codes)
    changed = np.ones(n, np.bool_)
    changed[1:] = codes[1:] != codes[:-1]
    samples = np.flatnonzero(~is_tick)
    cs = np.cumsum(changed)
    prev = np.concatenate(([-1], samples[:-1]))
    moved = cs[samples] - np.where(prev >= 0, cs[np.maximum(prev, 0)], 0) > 0
    start = np.zeros(n, np.bool_)
    start[samples[moved]] = True
    feed = start | (is_tick & changed)
    delay = np.array([inst.off_delay, 0.0, 0.0, inst.on_delay], np.float64)[codes]
    cuts = [(start, changed)]
    if len(after_mute):  # muting restarts a raise's debounce, not a clear's: cut runs both ways
        cut = start.copy()
        nxt = np.searchsorted(samples, after_mute, side="left")
        cut[samples[nxt[nxt < len(samples)]]] = True
        feed |= cut
        cuts.append((cut, changed | cut))
    for begin, boundary in cuts:
        segment = np.cumsum(boundary) - 1
        # Each segment holds at most one first sample; events before it in the segment are
        # ticks that cannot start a debounce.
        origin = np.full(int(segment[-1]) + 1, -1, np.int64)
        firsts = np.flatnonzero(begin)
        origin[segment[firsts]] = firsts
        o = origin[segment]
        late = (o >= 0) & (np.arange(n) > o) & (delay > 0)
        late &= when - when[np.maximum(o, 0)] >= delay
        hits = np.flatnonzero(late)
        if len(hits):
            feed[_first_of_each(hits, segment)] = True
    return feed
