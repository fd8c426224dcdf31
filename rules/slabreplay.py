"""The fast replay in bounded memory: the recording streamed in slabs of recorded order.

`rules.fastreplay` plans every rule instance over the whole recording at once, which holds the
whole recording in memory (a day of 1,000 signals at 1 Hz: 2.5 GB). Here the recording comes
in consecutive parts (`rules.pbrec.iter_columns`: whole blocks, a few million samples each),
and each part is planned and fed as `fastreplay` does, with the same rule instances carried
from part to part. The reference replay works in recorded order, so a slab boundary is a
position, never a time: nothing is re-sorted, a late sample needs no bound.

What a plan of one slab cannot see is made good three ways, so that the result stays the
reference replay's, transition for transition (tests/rules/test_fastreplay.py):

- Context: per signal, the tail of the samples before the slab (the last M good ones for an
  N-of-M window, those within the longest rate window, at least the last one) is put in front
  of the slab's arrays. Windows, latest values of a combination and last-seen times are set
  from it; its samples are never fed again. A rate rule's first good time is carried apart.
- A debounce pending at the slab start began before the slab: its instance is fed every own
  sample and tick of the slab until its delay is up (one delay of data time at most).
- The first and the last own sample of a slab are fed: the last so that the value a later tick
  reports and a stale rule's last-seen time are those of the newest sample, whatever the next
  slab holds; the first because it may answer a tick of the slab before (a stale rule clears
  on the first sample after the tick that raised it).

A rule kind the planner does not know, or a rate rule on data whose time goes backwards, is
fed every event; a rate rule fed everything once stays so (its window is then its own).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gateway.model import Transition
from rules.build import RuleSet
from rules.columns import BAD, NO_VALUE, QUALITY_MASK, Columns, between
from rules.engine import RuleEngine
from rules.episode import RuleInstance
from rules.fastreplay import _run
from rules.feedplan import Plan, plan
from rules.pbrec import iter_columns, load_columns
from rules.replay import ReplayResult, result_of
from rules.replaydata import EMPTY, Bools, ByKey, Floats, Ints, ReplayData, never_back
from rules.threshold import CountThreshold, RateRule

# Samples per slab. Measured on the benchmark week (1,000 signals at 1 Hz, 2 cores): a slab
# costs about 75 bytes a sample at its peak (the arrays, the per-key sort, the per-signal
# copies), so 8 M samples (a little over two hours of that plant) peak near 600 MB; smaller
# slabs save memory but plan every rule more often (4 M: 440 MB, about 10 % slower).
SLAB_SAMPLES = 8_000_000

_Found = list[tuple[tuple[int, int, int], Transition]]


def replay_slabs(rule_set: RuleSet, parts: Iterable[Columns],
                 tick_seconds: float = 1.0) -> ReplayResult:
    """Run `rule_set` on consecutive parts of one recording (each part holding every key of the
    parts before it, in the same numbering, as `iter_columns` gives them); the same result as
    `rules.replay.replay` on all of them, with one part in memory at a time."""
    run = SlabReplay(rule_set, tick_seconds)
    for part in parts:
        run.feed(part)
    return run.finish()


class SlabReplay:
    """Feed parts with `feed`, in recorded order; `finish` gives the result."""

    def __init__(self, rule_set: RuleSet, tick_seconds: float = 1.0) -> None:
        if not tick_seconds > 0:
            raise ValueError("tick_seconds must be positive")
        self._rules = rule_set
        self._step = tick_seconds
        self._engine = RuleEngine(rule_set)
        self._work: list[RuleInstance] = self._engine.instances()  # index = engine order
        self._everything: set[int] = set()  # rate rules fed every event from now on
        self._first_seen: set[int] = set()  # keys whose first evaluated sample came already
        self._first_good: dict[int, float] = {}
        self._tail: Columns | None = None  # context: per key, the tail before the next slab
        self._next_tick: int | None = None  # index k of the next tick at k * tick_seconds
        self._max_ts = -np.inf  # running maximum of time: what makes ticks run
        self._done = 0  # evaluated samples before this slab
        self._tick0 = 0  # index of this slab's first tick
        self.samples = 0
        self.skipped = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.transitions: list[Transition] = []

    def feed(self, part: Columns) -> None:
        """Plan and feed every rule instance on the next part; keep the tails for the next."""
        self.samples += len(part)
        q, v = part.quality, part.value
        keep = ((q & QUALITY_MASK) == BAD) | (((q & NO_VALUE) == 0) & np.isfinite(v))
        if not keep.all():
            part = Columns(part.keys, part.key[keep], part.ts[keep], part.value[keep],
                           part.quality[keep])
        self.skipped += int(len(keep) - len(part))
        if not len(part):
            return
        if self.first_ts is None:
            self.first_ts = float(part.ts[0])
        self.last_ts = float(part.ts[-1])
        data, ctx = self._data(part)
        births = self._discover(data, ctx)
        found: _Found = []
        rules = self._work  # the context is as long as the longest window asks
        window = max([r.window for r in rules if isinstance(r, RateRule)] or [0.0])
        ring = max([len(r.ring) for r in rules if isinstance(r, CountThreshold)] or [1])
        tails: dict[int, Ints] = {}
        order = sorted(range(len(rules)), key=lambda i: rules[i].asset)
        asset = None
        for i in order:
            inst = rules[i]
            if inst.asset != asset:
                _keep_tails(data, tails, ring, window)  # from the signals gathered already
                data.cache.clear()
                asset = inst.asset
            self._feed(i, inst, births.get(i, -1), data, ctx, found)
        _keep_tails(data, tails, ring, window)
        found.sort(key=lambda item: item[0])
        self.transitions.extend(t for _, t in found)
        for k in range(len(data.keys)):  # signals no rule looked at (a mute signal of a rule
            if k not in tails:           # that is not built yet, say): the same tail
                pos = data.by_key.positions(k)
                q = data.quality[pos]
                bad = ((q & QUALITY_MASK) == BAD) | ((q & NO_VALUE) != 0)
                tails[k] = _tail_of(pos, data.ts[pos], bad, ring, window)
        sel = np.sort(np.concatenate([EMPTY, *tails.values()]))
        self._tail = Columns(data.keys, data.key[sel], data.ts[sel], data.value[sel],
                             data.quality[sel])
        self._done += len(part)

    def finish(self) -> ReplayResult:
        return result_of(self._rules, self.transitions, self.samples, self.skipped,
                         self.first_ts, self.last_ts)

    # --- one slab -----------------------------------------------------------------------------

    def _data(self, part: Columns) -> tuple[ReplayData, int]:
        """The slab behind its context, with the ticks that run inside the slab."""
        tail = self._tail
        ctx = 0 if tail is None else len(tail)
        keys = part.keys
        if tail is None:
            key, ts, value, quality = part.key, part.ts, part.value, part.quality
        else:
            key = np.concatenate((tail.key, part.key))
            ts = np.concatenate((tail.ts, part.ts))
            value = np.concatenate((tail.value, part.value))
            quality = np.concatenate((tail.quality, part.quality))
        step = self._step
        later = part.ts
        if self._next_tick is None:  # the first sample sets the grid, as Replayer.feed does
            self._next_tick = int(np.floor(float(part.ts[0]) / step)) + 1
            self._max_ts = float(part.ts[0])
        # The running maximum of time, which decides where each tick runs: the times
        # themselves when they never go back (the usual case: no copy of the slab's size).
        if float(later[0]) >= self._max_ts and never_back(later):
            running = later
        else:
            running = np.maximum.accumulate(np.maximum(later, self._max_ts))
        last = float(running[-1])
        k0 = self._next_tick
        due = np.zeros(0)
        pos: Ints = EMPTY
        if k0 * step < last:
            ks = np.arange(k0, int(np.ceil(last / step)) + 2, dtype=np.int64)
            due = ks.astype(np.float64) * step
            due = due[due < last]
            pos = np.searchsorted(running, due, side="right").astype(np.int64) + ctx
            self._next_tick = k0 + len(due)
        self._max_ts = last
        self._tick0 = k0
        data = ReplayData(keys, key, ts, value, quality, due, pos, ByKey(key, len(keys)),
                          {k: i for i, k in enumerate(keys)}, {}, self._first_good)
        for k in range(len(keys)):
            if k not in self._first_good:
                p = data.by_key.positions(k)
                p = p[p >= ctx]
                q = quality[p]
                good = p[((q & QUALITY_MASK) != BAD) & ((q & NO_VALUE) == 0)]
                if len(good):
                    self._first_good[k] = float(ts[good[0]])
        return data, ctx

    def _discover(self, data: ReplayData, ctx: int) -> dict[int, int]:
        """Pattern rules built by keys first heard in this slab: their index and birth."""
        first: list[tuple[int, str, str]] = []
        for k, (asset, signal) in enumerate(data.keys):
            if k in self._first_seen:
                continue
            at = data.by_key.first(k)
            if at is not None:
                self._first_seen.add(k)
                first.append((at, asset, signal))
        births: dict[int, int] = {}
        for at, asset, signal in sorted(first):
            for inst in self._engine.discover(asset, signal):
                births[len(self._work)] = at
                self._work.append(inst)
        return births

    def _feed(self, order: int, inst: RuleInstance, birth: int, data: ReplayData, ctx: int,
              found: _Found) -> None:
        if order in self._everything:
            planned: Plan = _all(inst, data, ctx)
        else:
            planned = plan(inst, data, birth)
            if planned[2] is None and isinstance(inst, RateRule):  # time went backwards
                self._everything.add(order)
                _rate_window(inst, data, ctx)
                planned = _all(inst, data, ctx)
        samples, ticks, prime = planned
        if birth < 0:
            samples = samples[samples >= ctx]
        # else born in this slab: its mute samples in the context are fed too (the engine keeps
        # the latest good one for a rule not built yet); it has no own samples there.
        if order not in self._everything:
            extra = [samples, _ends(inst, data, ctx)]
            more_samples, more_ticks = _pending(inst, data, ctx)
            extra.append(more_samples)
            samples = np.unique(np.concatenate(extra))
            if len(more_ticks):
                ticks = np.union1d(ticks, more_ticks)
        got: _Found = []
        _run(inst, order, (samples, ticks, prime), data, got)
        base, k0 = self._done - ctx, self._tick0
        for (at, tick, rank), t in got:
            # Slab positions to recording positions: 2 * position (+1 for a sample); tick index.
            found.append(((at + 2 * base, tick + k0, rank), t))


def _all(inst: RuleInstance, data: ReplayData, ctx: int) -> Plan:
    fed = [data.of(asset, signal) for asset, signal in inst.keys()]  # noqa: SIM118 (a method)
    samples = np.unique(np.concatenate([EMPTY, *fed]))
    ticks = np.arange(len(data.tick_pos), dtype=np.int64) if inst.needs_tick() else EMPTY
    return samples[samples >= ctx], ticks, None


def _own(inst: RuleInstance, data: ReplayData, ctx: int) -> list[Ints]:
    out = []
    for signal in inst.signals():
        pos = data.signal(inst.asset, signal).pos
        out.append(pos[np.searchsorted(pos, ctx):])
    return out


def _ends(inst: RuleInstance, data: ReplayData, ctx: int) -> Ints:
    """The first and the newest own sample of each signal in the slab."""
    return np.array([x for p in _own(inst, data, ctx) if len(p) for x in (p[0], p[-1])],
                    np.int64)


def _pending(inst: RuleInstance, data: ReplayData, ctx: int) -> tuple[Ints, Ints]:
    """A debounce that began before the slab: every own (and mute) sample and tick until its
    delay is up, the first one late enough included."""
    since = inst.pending_since
    if since is None:
        return EMPTY, EMPTY
    delay = inst.off_delay if inst.active else inst.on_delay
    own = np.unique(np.concatenate([EMPTY, *_own(inst, data, ctx)]))
    late = np.flatnonzero(data.ts[own] - since >= delay)  # a mute sample decides nothing here
    pos = np.unique(np.concatenate([EMPTY, *(data.of(a, s) for a, s in inst.keys())]))  # noqa: SIM118
    pos = pos[pos >= ctx]
    samples = pos if not len(late) else pos[pos <= own[late[0]]]
    ticks = EMPTY
    if inst.needs_tick() and len(data.tick_due):
        late_t = np.flatnonzero(data.tick_due - since >= delay)
        stop = len(data.tick_due) if not len(late_t) else int(late_t[0]) + 1
        ticks = np.arange(stop, dtype=np.int64)
    return samples, ticks


def _rate_window(inst: RateRule, data: ReplayData, ctx: int) -> None:
    """The window a rate rule holds at the slab start, from the context (time ran forward so
    far): of each run of equal values only the newest, within the window of the newest."""
    pos = data.of(inst.asset, inst.signal)
    pos = pos[pos < ctx]
    q = data.quality[pos]
    pos = pos[((q & QUALITY_MASK) != BAD) & ((q & NO_VALUE) == 0)]
    if not len(pos):
        return
    t, v = data.ts[pos], data.value[pos]
    keep = t >= t[-1] - inst.window
    t, v = t[keep], v[keep]
    newest = np.ones(len(v), np.bool_)
    newest[:-1] = v[1:] != v[:-1]
    inst.set_window(zip(t[newest].tolist(), v[newest].tolist(), strict=True))


def _keep_tails(data: ReplayData, tails: dict[int, Ints], ring: int, window: float) -> None:
    """The tails of the signals gathered in `data.cache` (see `_tail_of`)."""
    for name, sig in data.cache.items():
        k = data.index.get(name)
        if k is not None and k not in tails:  # (None: a signal with no samples at all yet)
            tails[k] = _tail_of(sig.pos, sig.ts, sig.bad, ring, window)


def _tail_of(pos: Ints, ts: Floats, bad: Bools, ring: int, window: float) -> Ints:
    """Of one signal's positions, those the next slab's plans must see before their own: the
    last `ring` good ones, those within `window` of the newest good one, and the newest."""
    if not len(pos):
        return EMPTY
    start = len(pos) - 1
    good = np.flatnonzero(~bad)
    if len(good):
        first = len(good) - ring
        t = ts[good]
        if window > 0 and bool(np.all(t[1:] >= t[:-1])):
            # (Time that goes backwards sends a rate rule to be fed everything: no window.)
            first = min(first, int(np.searchsorted(t, t[-1] - window, side="left")))
        start = min(start, int(good[max(0, first)]))
    return pos[start:]


def replay_recording(rule_set: RuleSet, path: Path, *, start: float | None = None,
                     end: float | None = None, tick_seconds: float = 1.0,
                     slab_samples: int = SLAB_SAMPLES) -> tuple[ReplayResult, str | None]:
    """Replay a recording file with samples start <= ts <= end (None: open); a `.pbrec` is
    streamed `slab_samples` at a time, CSV and JSON lines are read whole. Returns the result
    and the recording's warning (a cut-off tail), if any. Raises RecordingError or OSError."""
    path = Path(path)
    warnings: list[str] = []

    def parts() -> Iterator[Columns]:
        source = (iter_columns(path, slab_samples) if path.suffix.lower() == ".pbrec"
                  else iter([load_columns(path)]))
        for part in source:
            if part.warning:
                warnings.append(part.warning)
            yield between(part, start, end)

    result = replay_slabs(rule_set, parts(), tick_seconds)
    return result, "; ".join(warnings) or None
