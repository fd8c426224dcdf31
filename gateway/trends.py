"""Recent trends for the status page: a bounded ring of min/max buckets per signal.

The page draws each rule signal over the last `window_seconds` (30 minutes). Keeping every
sample would cost memory without bound on a fast signal, and thinning by time would hide the
one peak that raised an alarm. So time is cut into `points` buckets of equal width, and each
bucket keeps the lowest, highest and last value that fell into it: a peak always survives.
A ring holds exactly `points` buckets (fixed arrays, allocated at the signal's first sample),
so memory is `points` x 20 bytes per signal, whatever the sample rate (see `bytes_used`).

Fed by the pipeline (`Pipeline.sample_listeners`, once per admitted sample: the hot path, kept
to a dict lookup and a few array writes) and by its transition listeners (raise/clear marks).
No plotting here: gateway/svg.py draws what `series` returns.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from gateway.model import Quality, Sample, Transition

_BAD = Quality.BAD

DEFAULT_WINDOW_SECONDS = 1800.0
MARKS_PER_SIGNAL = 16  # raise/clear marks kept per signal (a chattering rule keeps its latest)


class Bucket(NamedTuple):
    start: float  # bucket start time (seconds since 1970, the samples' time base)
    low: float
    high: float
    last: float


class Mark(NamedTuple):
    ts: float
    kind: str  # "raised" | "cleared"
    rule_id: str
    episode_id: str


class TrendRing:
    """`points` min/max/last buckets of `width` seconds; the newest overwrite the oldest.

    The bucket being filled lives in plain attributes (the hot path compares a time with its
    bounds and updates two or three floats); it is written to the arrays when the next one
    opens, and `buckets` reads it from the attributes.
    """

    __slots__ = ("_end", "_high", "_last", "_low", "_o_high", "_o_last", "_o_low", "_start",
                 "count", "head", "last_quality", "last_ts", "last_value", "width")

    def __init__(self, points: int, width: float) -> None:
        self.width = width
        self._start = array("d", bytes(8 * points))  # closed buckets, a ring
        self._low = array("f", bytes(4 * points))
        self._high = array("f", bytes(4 * points))
        self._last = array("f", bytes(4 * points))
        self.head = -1  # ring index of the open bucket (written there when it closes)
        self.count = 0  # buckets held, the open one included
        self._end = -math.inf  # the open bucket is [_end - width, _end)
        self._o_low = self._o_high = self._o_last = 0.0
        self.last_ts = -math.inf  # newest sample of any quality (for "no data")
        self.last_quality = Quality.GOOD
        self.last_value: float | None = None  # newest good value (the card's "now")

    @property
    def seen_at(self) -> float | None:
        return None if self.last_ts == -math.inf else self.last_ts

    def add(self, ts: float, value: float | None, quality: Quality) -> None:
        newest = ts >= self.last_ts
        if newest:
            self.last_ts, self.last_quality = ts, quality
        if value is None or quality is _BAD or value != value:  # the pipeline drops inf
            return
        end = self._end
        if end - self.width <= ts < end:  # the usual case: the open bucket
            if value < self._o_low:
                self._o_low = value
            elif value > self._o_high:
                self._o_high = value
            if newest:
                self._o_last = self.last_value = value
            return
        if ts < end:
            return  # older than the open bucket: a late sample does not rewrite the past
        self._close()
        start = (ts // self.width) * self.width
        self._end = start + self.width
        size = len(self._start)
        self.head = (self.head + 1) % size
        self.count = min(self.count + 1, size)
        self._start[self.head] = start
        self._o_low = self._o_high = self._o_last = self.last_value = value

    def _close(self) -> None:
        if self.head >= 0:
            h = self.head
            self._low[h], self._high[h], self._last[h] = self._o_low, self._o_high, self._o_last

    def buckets(self, since: float = -math.inf, until: float = math.inf) -> list[Bucket]:
        """Oldest first, those that overlap [since, until]."""
        self._close()
        size = len(self._start)
        out = []
        for k in range(self.count):
            i = (self.head - self.count + 1 + k) % size
            start = self._start[i]
            if since <= start + self.width and start <= until:
                out.append(Bucket(start, self._low[i], self._high[i], self._last[i]))
        return out


@dataclass(frozen=True, slots=True)
class Series:
    """What the page draws for one signal: buckets and marks of a time window."""

    asset: str
    signal: str
    since: float
    until: float
    buckets: list[Bucket]
    marks: list[Mark]
    bucket_seconds: float = 0.0


class TrendStore:
    """One `TrendRing` per (asset, signal), at most `max_signals` of them (then new signals
    are counted in `dropped_signals` and get no trend: the page says so, memory stays put).

    `follow(signals)` limits the rings to the signal names the rules read: the page draws no
    other, and a ring is 3.7 KiB, so a Modbus source of 100,000 points would otherwise hold
    `max_signals` rings (84 MB) that nothing shows."""

    def __init__(self, points: int, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 max_signals: int = 20_000) -> None:
        if points < 2:
            raise ValueError("a trend needs at least 2 points")
        self.points = points
        self.window_seconds = window_seconds
        self.width = window_seconds / points
        self.max_signals = max_signals
        self.dropped_signals = 0
        self._rings: dict[tuple[str, str], TrendRing] = {}
        self._marks: dict[tuple[str, str], deque[Mark]] = {}
        self._signals: frozenset[str] | None = None  # None: every signal gets a ring

    def follow(self, signals: Iterable[str]) -> None:
        """Keep rings for these signal names only (the rules' signals; set again on reload):
        rings of other signals are dropped, samples of other signals are passed over."""
        self._signals = frozenset(signals)
        self._rings = {k: r for k, r in self._rings.items() if k[1] in self._signals}

    def on_sample(self, sample: Sample) -> None:
        """Pipeline sample listener: one admitted sample."""
        key = (sample.asset, sample.signal)
        ring = self._rings.get(key)
        if ring is None:
            if self._signals is not None and sample.signal not in self._signals:
                return  # no rule reads it: nothing would draw its trend
            if len(self._rings) >= self.max_signals:
                self.dropped_signals += 1
                return
            ring = self._rings[key] = TrendRing(self.points, self.width)
        ring.add(sample.source_ts, sample.value, sample.quality)

    def on_transition(self, t: Transition) -> None:
        """Pipeline transition listener: a committed raise or clear, marked on its signal."""
        marks = self._marks.get((t.asset, t.signal))
        if marks is None:
            marks = self._marks[(t.asset, t.signal)] = deque(maxlen=MARKS_PER_SIGNAL)
        marks.append(Mark(t.ts, str(t.kind), t.rule_id, t.episode_id))

    def ring(self, asset: str, signal: str) -> TrendRing | None:
        return self._rings.get((asset, signal))

    def series(self, asset: str, signal: str, since: float, until: float) -> Series:
        ring = self._rings.get((asset, signal))
        buckets = ring.buckets(since, until) if ring is not None else []
        marks = [m for m in self._marks.get((asset, signal), ()) if since <= m.ts <= until]
        return Series(asset, signal, since, until, buckets, marks, self.width)

    def __len__(self) -> int:
        return len(self._rings)

    def bytes_used(self) -> int:
        """Memory held by the rings (arrays and objects), measured, not estimated."""
        import sys

        total = sys.getsizeof(self._rings)
        for key, ring in self._rings.items():
            total += sys.getsizeof(key) + sys.getsizeof(ring)
            total += sum(sys.getsizeof(a) for a in (ring._start, ring._low, ring._high,
                                                   ring._last))
        return total
