"""Threshold and rate-of-change rules: a value (or its change in a window) beyond a level.

Every form is written as "alarm when the value leaves [lo, hi]" (above: lo = -inf; below:
hi = +inf; outside a band) or, for `inside`, "alarm when it enters [lo, hi]". Hysteresis is a
second band, [clear_lo, clear_hi]: an episode clears only once the value is back within it.
Levels are strict ("above 7.1" means more than 7.1); clear levels are inclusive ("clear_below
6.0" clears at 6.0 or less).
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from gateway.model import EpisodeState, Quality, RuleState, Sample, Transition
from rules.episode import RequestTemplate, RuleInstance, both, num
from rules.state import VERSION, StateError, as_float, as_int, as_list, as_opt_float
from rules.windowlog import SEGMENT_POINTS, WindowLog, check_kind, is_logged, le_bytes

_BAD: Final = Quality.BAD
INF: Final = math.inf
_BIG_ENDIAN: Final = sys.byteorder == "big"
_PAIR: Final = struct.Struct("=dd")  # a (time, value) pair as the window's array holds it
_COMPACT: Final = 1024  # cut the part of a rate window that left it once it is this long


@mypyc_attr(allow_interpreted_subclasses=True)
class BandThreshold(RuleInstance):
    """above / below / outside a band, with optional hysteresis and debounce."""

    __slots__ = ("chi", "clo", "form", "hi", "lo")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, form: str, lo: float,
                 hi: float, clear_lo: float, clear_hi: float,
                 suppress: tuple[tuple[str, float], ...] = (), on_delay: float = 0.0,
                 off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress,
                         on_delay, off_delay)
        self.form = form
        self.lo = lo
        self.hi = hi
        self.clo = clear_lo
        self.chi = clear_hi

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        if v is None or sample.quality is _BAD:
            self._cancel()  # bad data neither raises nor clears
            return None
        self.last_value = v
        if self.active:
            if self.clo <= v <= self.chi:
                return self._step(False, sample.source_ts, v)
        elif v > self.hi or v < self.lo:
            return self._step(True, sample.source_ts, v)
        if self.pending_since is not None:
            self.pending_since = None
            self._dirty.add(self)
        return None

    def describe(self, value: float | None, raising: bool) -> str:
        what = f"{self.signal} {num(value)}"
        if self.form == "above":
            return (f"{what} above {num(self.hi)}" if raising
                    else f"{what} back at or below {num(self.chi)}")
        if self.form == "below":
            return (f"{what} below {num(self.lo)}" if raising
                    else f"{what} back at or above {num(self.clo)}")
        return (f"{what} outside {num(self.lo)}..{num(self.hi)}" if raising
                else f"{what} back inside {num(self.clo)}..{num(self.chi)}")


@mypyc_attr(allow_interpreted_subclasses=True)
class InsideThreshold(RuleInstance):
    """Alarm while the value is inside a band (e.g. a resonance speed range)."""

    __slots__ = ("chi", "clo", "hi", "lo")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, lo: float, hi: float,
                 clear_lo: float, clear_hi: float, suppress: tuple[tuple[str, float], ...] = (),
                 on_delay: float = 0.0, off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress,
                         on_delay, off_delay)
        self.lo, self.hi, self.clo, self.chi = lo, hi, clear_lo, clear_hi

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        if v is None or sample.quality is _BAD:
            self._cancel()
            return None
        self.last_value = v
        raw = (not (v < self.clo or v > self.chi)) if self.active else self.lo <= v <= self.hi
        return self._step(raw, sample.source_ts, v)

    def describe(self, value: float | None, raising: bool) -> str:
        what = f"{self.signal} {num(value)}"
        return (f"{what} inside {num(self.lo)}..{num(self.hi)}" if raising
                else f"{what} back outside {num(self.clo)}..{num(self.chi)}")


@mypyc_attr(allow_interpreted_subclasses=True)
class CountThreshold(RuleInstance):
    """N of the last M good samples beyond the level raise; fewer than N not yet clear, clear."""

    __slots__ = ("chi", "clo", "form", "hi", "inverted", "lo", "n", "n_alarm", "n_held",
                 "ring", "slot")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, form: str, lo: float,
                 hi: float, clear_lo: float, clear_hi: float, count: int, of_last: int,
                 suppress: tuple[tuple[str, float], ...] = (), on_delay: float = 0.0,
                 off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress,
                         on_delay, off_delay)
        self.form = form
        self.inverted = form == "inside"
        self.lo, self.hi, self.clo, self.chi = lo, hi, clear_lo, clear_hi
        self.n = count
        self.ring = [0] * of_last  # per sample: 1 beyond the alarm level, +2 not yet clear
        self.slot = 0
        self.n_alarm = 0  # samples in the ring beyond the alarm level
        self.n_held = 0  # samples in the ring not back within the clear band

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        if v is None or sample.quality is _BAD:
            self._cancel()
            return None
        self.last_value = v
        if self.inverted:
            mark = (self.lo <= v <= self.hi) + 2 * (not (v < self.clo or v > self.chi))
        elif (not self.n_held and self.clo <= v <= self.chi and self.pending_since is None
              and not self.active):
            # The usual case: the window is all clear and stays so. Its marks are all 0 (the
            # clear band lies within the alarm band), so which slot is next does not matter.
            return None
        else:
            mark = (v > self.hi or v < self.lo) + 2 * (not (self.clo <= v <= self.chi))
        ring, slot = self.ring, self.slot
        if mark or self.n_alarm or self.n_held:
            # The window, oldest first, may change. Not when it is all clear and stays so
            # (the usual case): then moving the slot changes nothing a restart needs.
            self._dirty.add(self)
        old = ring[slot]
        if old != mark:
            ring[slot] = mark
            self.n_alarm += (mark & 1) - (old & 1)
            self.n_held += (mark >> 1) - (old >> 1)
        self.slot = slot + 1 if slot + 1 < len(ring) else 0
        raw = self.n_held >= self.n if self.active else self.n_alarm >= self.n
        if raw is self.active:
            if self.pending_since is not None:
                self.pending_since = None
                self._dirty.add(self)
            return None
        return self._step(raw, sample.source_ts, v)

    def restore(self, episode: EpisodeState) -> None:
        """Without stored state, assume the last M samples were in alarm: only M new samples
        can clear it. State loaded before that holds this episode is kept."""
        if self.active and self.episode_id == episode.episode_id:
            return
        super().restore(episode)
        self.ring = [3] * len(self.ring)
        self.n_alarm = self.n_held = len(self.ring)

    def _snapshot_kind(self) -> Any:
        """The window's marks, oldest first (so the slot need not be stored)."""
        ring, slot = self.ring, self.slot
        return ring[slot:] + ring[:slot]

    def _load_kind(self, data: Any) -> None:
        marks = [as_int(x, "N-of-M mark") for x in as_list(data, len(self.ring), "N-of-M ring")]
        if any(not 0 <= x <= 3 for x in marks):
            raise StateError(f"N-of-M marks must be 0..3, got {marks}")
        self.ring, self.slot = marks, 0
        self.n_alarm = sum(x & 1 for x in marks)
        self.n_held = sum(x >> 1 for x in marks)

    def describe(self, value: float | None, raising: bool) -> str:
        m = len(self.ring)
        level = {"above": f"above {num(self.hi)}", "below": f"below {num(self.lo)}",
                 "outside": f"outside {num(self.lo)}..{num(self.hi)}",
                 "inside": f"inside {num(self.lo)}..{num(self.hi)}"}[self.form]
        if raising:
            return (f"{self.signal} {level} in {self.n_alarm} of the last {m} samples "
                    f"(now {num(value)})")
        return (f"{self.signal} beyond the clear level in only {self.n_held} of the last {m} "
                f"samples (now {num(value)})")


@mypyc_attr(allow_interpreted_subclasses=True)
class RateRule(RuleInstance):
    """The change of a signal within a sliding time window, compared with a level.

    The window is one flat `array('d')` of [t0, v0, t1, v1, ...] from `head` on (the part
    before `head` has left the window and is cut off now and then): appending costs no tuple,
    and the snapshot is one copy of its bytes instead of a list of pairs. What the engine
    stores (`durable`) is less: the window's new tail, and now and then a segment that is
    written once (rules/windowlog.py), so a commit costs O(changes), not O(window).
    """

    segment_points: ClassVar[int] = SEGMENT_POINTS  # pairs per stored segment of the window
    __slots__ = ("base", "chi", "clo", "delta", "first_ts", "head", "hi", "lo", "points",
                 "rising", "window", "wlog")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, window: float, lo: float,
                 hi: float, clear_lo: float, clear_hi: float,
                 suppress: tuple[tuple[str, float], ...] = (), on_delay: float = 0.0,
                 off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress,
                         on_delay, off_delay)
        self.window = window
        self.lo, self.hi, self.clo, self.chi = lo, hi, clear_lo, clear_hi
        self.rising = hi < INF
        self.points = array("d")  # [t, v, t, v, ...]; the window starts at `head`
        self.head = 0
        self.base = 0  # absolute number of the pair at points[0] (pairs cut off before it)
        self.wlog = WindowLog(self.segment_points)  # which pairs are stored in segment rows
        self.delta = 0.0
        self.first_ts: float | None = None  # first sample since start, restore or reload

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        if v is None or sample.quality is _BAD:
            self._cancel()
            return None
        ts = sample.source_ts
        self.last_value = v
        self._dirty.add(self)  # the window moves with every good sample
        points, head = self.points, self.head
        if len(points) > head and points[-1] == v:
            # Of equal neighbours only the newest can matter: while it is in the window the
            # change is the same whichever of them is the oldest. A shorter window to store.
            points[-2] = ts
        else:
            # one pair in one call: array.append parses its argument as a format string does,
            # twice; the compiled engine spent 2.5 % of its instructions there
            points.frombytes(_PAIR.pack(ts, v))
        start = ts - self.window
        while points[head] < start:
            head += 2
        if head >= _COMPACT and head * 2 >= len(points):
            del points[:head]  # amortised: at most as much as was appended since the last cut
            self.base += head >> 1
            head = 0
        self.head = head
        d = self.delta = v - points[head + 1]
        if self.active:
            # A clear needs a full window of data: right after a restart the history is short
            # and a change of 0 says nothing.
            first = self.first_ts
            if first is None:
                first = self.first_ts = ts
            raw = not (self.clo <= d <= self.chi) or ts - first < self.window
        else:
            if self.first_ts is None:
                self.first_ts = ts
            raw = d > self.hi or d < self.lo
        if raw is self.active and self.pending_since is None:
            return None  # the usual case: nothing to debounce
        return self._step(raw, ts, v)

    def set_window(self, pairs: Iterable[tuple[float, float]]) -> None:
        """Replace the window with these (time, value) pairs, oldest first (the fast replay
        primes it this way)."""
        self._replace_points(array("d", [x for pair in pairs for x in pair]))

    def _replace_points(self, points: array[float]) -> None:
        """A new window: absolute numbering goes on after the old one, whose stored segments
        have then all left the window (the next `durable` deletes them)."""
        self.base += len(self.points) >> 1
        self.points, self.head = points, 0

    def window_pairs(self) -> list[tuple[float, float]]:
        """The window, oldest first, as (time, value) pairs."""
        p = self.points[self.head:]
        return list(zip(p[::2], p[1::2], strict=True))

    def snapshot(self) -> tuple[Any, ...]:
        """`RuleInstance.snapshot` in one frame for the usual case (no open request, not
        muted), two calls fewer: a rate rule changes with every good sample, so it is
        snapshotted at every commit group. Copying the window is most of the cost left."""
        if self.request is not None or self._suppressed_by or _BIG_ENDIAN:
            return super().snapshot()
        return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                self.last_value, None, (),
                (self.first_ts, self.delta, memoryview(self.points)[self.head:].tobytes()))

    def durable(self, log: list[RuleState]) -> tuple[Any, ...]:
        """The stored form: like `snapshot`, but the window's part is the log form of
        rules/windowlog.py, (first_ts, delta, tail bytes, tail start, window start, first
        segment, next segment), and `log` gets the segment rows sealed or deleted now. What
        is copied per commit is the tail (at most `segment_points` pairs), not the window."""
        points, base, wlog = self.points, self.base, self.wlog
        head_abs = base + (self.head >> 1)
        sealed = wlog.sealed
        if (base + (len(points) >> 1) - sealed > wlog.size or sealed < base
                or head_abs >= wlog.live_end):
            wlog.roll(points, base, head_abs, self.rule_id, self.asset, self._fingerprint, log)
            sealed = wlog.sealed
        tail_from = sealed if sealed > head_abs else head_abs
        tail = (le_bytes(points, (tail_from - base) * 2) if _BIG_ENDIAN
                else points[(tail_from - base) * 2:].tobytes())  # (a slice: faster than a view)
        segs = wlog.segs
        kind = (self.first_ts, self.delta, tail, tail_from, head_abs,
                segs[0][0] if segs else wlog.next, wlog.next)
        if self.request is not None or self._suppressed_by:
            return self._snapshot_with(kind)
        return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                self.last_value, None, (), kind)

    def load(self, data: Any, parts: Mapping[int, bytes] | None = None) -> None:
        """Take back a `snapshot` or a `durable` form; for the latter `parts` are the segment
        rows by number (StateError, and nothing changed, when one it names is missing)."""
        items = as_list(data)
        kind = items[8] if len(items) == 9 else None
        if not is_logged(kind):
            super().load(data)
            return
        wlog = WindowLog(self.segment_points)
        first_ts, delta, points, base, head = wlog.join(check_kind(kind), parts or {})
        plain = [*items[:8], (first_ts, delta, le_bytes(points, head))]
        super().load(plain)  # checks the rest (and the window) before changing anything
        self.points, self.base, self.head, self.wlog = points, base, head, wlog

    def log_keys(self) -> list[int]:
        """Numbers of the segment rows stored for this window now."""
        return self.wlog.keys()

    def _snapshot_kind(self) -> Any:
        """(first_ts, delta, the window as little-endian float64 bytes t0 v0 t1 v1 ...)."""
        return (self.first_ts, self.delta, _window_bytes(self.points, self.head))

    def _load_kind(self, data: Any) -> None:
        first, delta, window = as_list(data, 3, "rate window")
        if isinstance(window, bytes):
            if len(window) % 16:
                raise StateError(f"rate window: {len(window)} bytes, not pairs of float64")
            points = array("d", window)
            if _BIG_ENDIAN:
                points.byteswap()
            if any(math.isnan(x) for x in points):
                raise StateError("rate window: NaN")
        else:  # the layout before the bytes: [[t, v], ...]
            pairs = [as_list(p, 2, "rate point") for p in as_list(window, None, "rate window")]
            points = array("d", [as_float(x, "rate point") for pair in pairs for x in pair])
        first_ts, change = as_opt_float(first, "first_ts"), as_float(delta, "delta")
        self.first_ts, self.delta = first_ts, change
        self._replace_points(points)

    def describe(self, value: float | None, raising: bool) -> str:
        moved = f"{'rose' if self.delta >= 0 else 'fell'} {num(abs(self.delta))}"
        span = f"within {num(self.window)} s"
        if raising:
            limit = num(self.hi) if self.rising else num(-self.lo)
            return f"{self.signal} {moved} {span} (limit {limit}, now {num(value)})"
        return f"{self.signal} change back to {num(self.delta)} {span} (now {num(value)})"


def _window_bytes(points: array[float], head: int) -> bytes:
    """The window from `head` on as little-endian bytes (one copy; stored state must read the
    same on any machine)."""
    if not _BIG_ENDIAN:
        return memoryview(points)[head:].tobytes()
    part = points[head:]
    part.byteswap()
    return part.tobytes()
