"""Which events each rule instance must see so that it ends up exactly where feeding it every
sample and tick would have left it (see `rules.fastreplay` for the idea).

A plan is (sample positions, tick indexes, primer): the primer sets window state (rate history,
N-of-M ring, latest values of a combination) from the arrays before each fed event.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from rules.episode import RuleInstance
from rules.replaydata import EMPTY, Bools, Floats, Ints, ReplayData, SignalData
from rules.threshold import BandThreshold, CountThreshold, InsideThreshold, RateRule
from rules.watch import BadQualityRule, CombinationRule, StaleRule

Codes = npt.NDArray[np.int8]
Primer = Callable[[RuleInstance, int, int], None]  # (instance, sample position or -1, tick or -1)
Plan = tuple[Ints, Ints, Primer | None]

BAD_DATA = 4  # class of a sample that is bad (or has no value): cancels a pending debounce


def plan(inst: RuleInstance, data: ReplayData, birth: int) -> Plan:
    """The events this instance must see: the planner of its kind, or all of them."""
    first_tick = int(np.searchsorted(data.tick_pos, birth, side="right"))
    ticks = np.arange(first_tick, len(data.tick_pos), dtype=np.int64)
    if not inst.needs_tick():
        ticks = EMPTY
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


def _everything(inst: RuleInstance, data: ReplayData, ticks: Ints) -> Plan:
    fed = [data.of(asset, signal) for asset, signal in inst.keys()]  # noqa: SIM118 (a method)
    return np.unique(np.concatenate([EMPTY, *fed])), ticks, None


def _mute_changes(inst: RuleInstance, data: ReplayData) -> Ints:
    """Positions of the mute-signal samples that change whether the rule is muted."""
    found = [EMPTY]
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


def _classes(inst: RuleInstance, own: SignalData) -> Codes:
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


def _runs(codes: Codes, sig: SignalData, data: ReplayData, inst: RuleInstance, ticks: Ints,
          mute: Ints) -> tuple[Ints, Ints]:
    """Samples and ticks to feed for a rule whose decision is a function of the class."""
    own, t = sig.pos, sig.ts
    n = len(own)
    if n == 0:
        return mute, EMPTY  # without own samples nothing can raise or clear (muting: keep up)
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
    fed_ticks = [EMPTY]
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
    # A sample (or a mute signal) may find a delay that ran out before it: the flip is then
    # made first, at the deadline, with the value before it (`RuleInstance._overdue`). So the
    # sample before each fed one is fed too, as before a tick.
    feed[:-1] |= feed[1:]
    if len(mute):
        before_mute = np.searchsorted(own, mute) - 1
        feed[before_mute[before_mute >= 0]] = True
    return np.union1d(own[feed], mute), np.unique(np.concatenate(fed_ticks))


def _first_ticks_past(opposing: Ints, own: Ints, t: Floats, delay: Floats, first: Ints,
                      data: ReplayData, ticks: Ints) -> tuple[Ints, Ints]:
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


def _count(inst: CountThreshold, sig: SignalData) -> tuple[Codes, Primer]:
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


def _rate(inst: RateRule, sig: SignalData) -> tuple[Codes, Primer] | None:
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
        t0 = t[0] if sig.first_good is None else sig.first_good  # streamed: the first ever
        holds = ~((inst.clo <= d) & (d <= inst.chi)) | (t - t0 < inst.window)
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
        rule.set_window([(float(t[s]), float(v[s]))] if s < c else ())

    return codes, prime


# --- stale ----------------------------------------------------------------------------------


def _stale(inst: StaleRule, data: ReplayData, sig: SignalData, ticks: Ints, mute: Ints) -> Plan:
    """Ticks that find the signal silent past the limit, and the samples either side."""
    own, t = sig.pos, sig.ts
    if not len(ticks) or not len(own):
        # It raises only on a tick, and only once it heard the signal. The muting is kept up
        # to date all the same: a streamed replay goes on with this instance in the next slab.
        return mute, EMPTY, None
    due, tpos = data.tick_due[ticks], data.tick_pos[ticks]
    before = np.searchsorted(own, tpos, side="left")  # own samples before each tick
    seen = np.where(before > 0, t[np.maximum(before - 1, 0)], np.inf)  # none yet: not watching
    late = np.flatnonzero(due - seen > inst.limit)
    if not inst.suppress_while():
        late = _first_of_each(late, before)  # the first late tick of a silence raises
    fed = late
    around = np.concatenate((before[late] - 1, before[late]))
    around = around[(around >= 0) & (around < len(own))]
    return np.union1d(own[around], mute), ticks[fed], None


# --- combinations ---------------------------------------------------------------------------


def _combination(inst: CombinationRule, data: ReplayData, ticks: Ints, mute: Ints) -> Plan:
    """Class of every sample and tick from the latest value per signal and its age."""
    sigs = [data.signal(inst.asset, s) for s in inst.index]
    own = np.concatenate([EMPTY, *(g.pos for g in sigs)])
    if not len(own):
        return mute, EMPTY, None  # muting kept up to date (a streamed replay goes on)
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
    def code_at(e: int, t: float) -> int:
        """The class at time `t` with the latest values as of event `e` (-1: none yet)."""
        if e < 0:
            return 2
        fresh_e = [bool(seen[e] >= t - inst.max_age) for seen, _, _ in latest]
        ok_e = [bool(ok[e]) for _, _, ok in latest]
        if inst.need_all:
            if any(f and not o for f, o in zip(fresh_e, ok_e, strict=True)):
                return 0
            return 2 if not all(fresh_e) else 3
        if any(f and o for f, o in zip(fresh_e, ok_e, strict=True)):
            return 3
        return 2 if not all(fresh_e) else 0

    feed = _combination_events(inst, codes, when, is_tick, after_mute, code_at)
    fed = np.flatnonzero(feed)

    def prime(rule: RuleInstance, i: int, tick: int) -> None:
        """Latest values as of just before this event: the sample then sets its own, as in
        the engine, and a delay that ran out before it is judged without it (`_overdue`). A
        mute sample of another signal may find such a delay too: the latest values then."""
        if i >= 0:
            j = int(np.searchsorted(own, i))
            if j == len(own) or own[j] != i:  # a mute sample of another signal
                e = j + int(np.searchsorted(tpos, i, side="right")) - 1
            else:
                e = int(at_sample[j]) - 1
        else:
            e = int(at_tick[int(np.searchsorted(ticks, tick))])
        assert isinstance(rule, CombinationRule)
        for c, (seen, value, ok) in enumerate(latest):
            if e < 0:  # nothing before it
                rule.seen[c], rule.values[c], rule.verdict[c] = -math.inf, None, False
                continue
            rule.seen[c] = float(seen[e])
            rule.values[c] = None if math.isnan(value[e]) else float(value[e])
            rule.verdict[c] = bool(ok[e])

    samples = which[fed[~is_tick[fed]]]
    return np.union1d(samples, mute), which[fed[is_tick[fed]]], prime


def _combination_events(inst: CombinationRule, codes: Codes, when: Floats, is_tick: Bools,
                        after_mute: Ints, code_at: Callable[[int, float], int]) -> Bools:
    """Which merged events to feed: the first sample of a run (also after a tick that changed
    the class, since that tick cancelled any pending debounce), such ticks themselves, and the
    first event of a run past its delay. A sample past the deadline is judged at the deadline
    first (`_overdue`): if the class was another then (a value had gone stale), the delay is
    dropped and that sample starts it again, so its run goes on from there."""
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
        for h in _first_of_each(hits, segment).tolist():
            start_at, at = int(o[h]), h
            while True:
                feed[at] = True
                deadline = when[start_at] + delay[start_at]
                if (is_tick[at] or not when[at] > deadline
                        or code_at(at - 1, deadline) == codes[start_at]):
                    break
                end = int(np.searchsorted(segment, segment[at], side="right"))
                nxt = np.flatnonzero(when[at + 1:end] - when[at] >= delay[at])
                if not len(nxt):
                    break
                start_at, at = at, at + 1 + int(nxt[0])
    return feed
