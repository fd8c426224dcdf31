"""Rules about the data itself (stale, bad quality) and combinations of conditions.

Stale and bad-quality rules are kept apart from process alarms: they say a sensor is silent or
failed, never that the machine is in trouble. A combination rule judges the latest value of each
signal, if it is no older than `max_age_seconds`; a condition it cannot judge (no value, too old,
bad quality) is unknown, and unknown neither raises nor clears.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final

from mypy_extensions import mypyc_attr

from gateway.model import Quality, RuleState, Sample, Transition, TransitionKind
from rules.episode import RequestTemplate, RuleInstance, both, num
from rules.state import VERSION, StateError, as_bool, as_float, as_list, as_opt_float

_BAD: Final = Quality.BAD


@mypyc_attr(allow_interpreted_subclasses=True)
class StaleRule(RuleInstance):
    """No sample at all for longer than the limit.

    Watching starts at the first sample ever seen for the asset (kept across restarts): an asset
    that never reported is not "silent", it is not there, and raises nothing.
    """

    __slots__ = ("last_seen", "limit")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, limit: float,
                 suppress: tuple[tuple[str, float], ...] = ()) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress)
        self.limit = limit
        self.last_seen: float | None = None

    def needs_tick(self) -> bool:
        return True

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        ts = sample.source_ts
        if sample.value is not None:
            self.last_value = sample.value
        self._dirty.add(self)  # the last-seen time moves with every sample
        if not self.active:
            self.last_seen = ts
            return None
        gap = 0.0 if self.last_seen is None else ts - self.last_seen
        self.last_seen = ts
        return self._make(TransitionKind.CLEARED, ts, sample.value,
                          f"{self.signal} reporting again after {num(gap)} s")

    def tick(self, now: float) -> Transition | None:
        seen = self.last_seen
        if seen is None:  # never reported: nothing to miss yet
            return None
        if self.active or self.suppressed or now - seen <= self.limit:
            return None
        return self._make(TransitionKind.RAISED, now, None,
                          f"no {self.signal} data for {num(now - seen)} s "
                          f"(limit {num(self.limit)} s)")

    def resume(self, now: float, grace: float) -> None:
        """After a start: a sensor must be silent for `grace` (at most the limit) while we
        watch before it is called silent; the downtime itself is no evidence of silence."""
        seen = self.last_seen
        if seen is not None and not self.active:
            floor = now - self.limit + min(self.limit, grace)
            if seen < floor:
                self.last_seen = floor
                self._dirty.add(self)

    def describe(self, value: float | None, raising: bool) -> str:
        return f"{self.signal} {'silent' if raising else 'reporting'}"

    def durable(self, log: list[RuleState]) -> tuple[Any, ...]:
        """`RuleInstance.snapshot` in one frame for the usual case (no open request, not
        muted): the last-seen time changes with every sample, so every commit group
        snapshots every stale rule that saw one (the engine calls this, not `snapshot`)."""
        if self.request is not None or self._suppressed_by:
            return super().snapshot()
        return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                self.last_value, None, (), self.last_seen)

    def snapshot(self) -> tuple[Any, ...]:
        return self.durable([])

    def _snapshot_kind(self) -> Any:
        return self.last_seen

    def _load_kind(self, data: Any) -> None:
        self.last_seen = as_opt_float(data, "last_seen")


@mypyc_attr(allow_interpreted_subclasses=True)
class BadQualityRule(RuleInstance):
    """Bad quality without a break for longer than the limit: a failed sensor or link."""

    __slots__ = ()

    def needs_tick(self) -> bool:
        return True

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        bad = v is None or sample.quality is _BAD
        if bad is self.active:  # the usual case: nothing changes
            if self.pending_since is not None:
                self.pending_since = None
                self._dirty.add(self)
            if v is not None:
                self.last_value = v
            return None
        if v is not None:
            self.last_value = v
        return self._step(bad, sample.source_ts, v)

    def tick(self, now: float) -> Transition | None:
        since = self.pending_since
        if since is None:
            return None
        if now - since < (self.off_delay if self.active else self.on_delay):
            return None
        # A raise reports no value: the last good one is not what the sensor says now.
        return self._flip(now, self.last_value if self.active else None, now - since)

    def describe(self, value: float | None, raising: bool) -> str:
        if raising:
            return f"{self.signal} quality bad"
        return f"{self.signal} quality good again ({num(value)})"


Condition = tuple[str, str, float]  # (signal, "above" | "below" | "equals", level)
_OPS = {"above": ">", "below": "<", "equals": "="}
_OPCODE = {"above": 0, "below": 1, "equals": 2}


@mypyc_attr(allow_interpreted_subclasses=True)
class CombinationRule(RuleInstance):
    """All of (or any of) several conditions on the latest value of each signal."""

    __slots__ = ("conditions", "index", "max_age", "need_all", "seen", "values", "verdict")

    def __init__(self, rule_id: str, asset: str, severity: int, request: RequestTemplate,
                 fingerprint: str, *, conditions: tuple[Condition, ...], need_all: bool,
                 max_age: float, suppress: tuple[tuple[str, float], ...] = (),
                 on_delay: float = 0.0, off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, conditions[0][0], severity, request, fingerprint,
                         suppress, on_delay, off_delay)
        self.conditions = conditions
        self.need_all = need_all
        self.max_age = max_age
        self.index = _index_of(conditions)
        # Per condition: when its signal last had a usable value, that value, and whether the
        # condition held for it.
        self.seen = [-math.inf] * len(conditions)
        self.values: list[float | None] = [None] * len(conditions)
        self.verdict = [False] * len(conditions)

    def signals(self) -> tuple[str, ...]:
        return tuple(self.index)

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        if self.pending_since is not None:  # a delay that ran out before this sample
            overdue = self._overdue(sample.source_ts)
            if overdue is not None:
                return both(overdue, self.evaluate(sample))
        v = sample.value
        ts = sample.source_ts
        seen, verdict = self.seen, self.verdict
        self._dirty.add(self)  # latest values and their times
        if v is None or sample.quality is _BAD:
            for i, _, _ in self.index[sample.signal]:
                seen[i] = -math.inf
                self.values[i] = None
        else:
            for i, op, level in self.index[sample.signal]:
                seen[i] = ts
                self.values[i] = v
                verdict[i] = v > level if op == 0 else v < level if op == 1 else v == level
        raw = self._holds(ts)
        if raw is None or raw is self.active:
            self.pending_since = None  # dirty already
            return None
        return self._judge(ts)

    def tick(self, now: float) -> Transition | None:
        if self.pending_since is None:
            return None
        return self._judge(now)

    def _judge(self, now: float) -> Transition | None:
        raw = self._holds(now)
        if raw is None or raw is self.active:
            if self.pending_since is not None:
                self.pending_since = None
                self._dirty.add(self)
            return None
        value = self.values[0]
        self.last_value = value
        return self._step(raw, now, value)

    def _holds(self, now: float) -> bool | None:
        """True, False, or None when the answer depends on a value we do not have."""
        oldest = now - self.max_age
        need_all = self.need_all
        seen, verdict = self.seen, self.verdict
        unknown = False
        # An index loop, not zip/min/all: compiled, a builtin is a module attribute lookup and
        # a generic call, which were a third of a combination's cost per sample.
        for i in range(len(seen)):
            if seen[i] < oldest:
                unknown = True
            elif verdict[i] is not need_all:
                return verdict[i]
        return None if unknown else need_all

    def durable(self, log: list[RuleState]) -> tuple[Any, ...]:
        """`RuleInstance.snapshot` in one frame for the usual case (no open request, not
        muted): a combination changes with every sample it sees (the engine calls this)."""
        if self.request is not None or self._suppressed_by:
            return super().snapshot()
        return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                self.last_value, None, (), (*self.seen, *self.values, *self.verdict))

    def snapshot(self) -> tuple[Any, ...]:
        return self.durable([])

    def _snapshot_kind(self) -> Any:
        """(when each condition's signal last had a usable value..., those values...,
        the verdicts...): flat, one tuple to build per commit (the rule changes with every
        sample). Before: [[when, value, verdict], ...] per condition, still loaded."""
        return (*self.seen, *self.values, *self.verdict)

    def _load_kind(self, data: Any) -> None:
        n = len(self.conditions)
        items = as_list(data, None, "combination values")
        if len(items) == 3 * n:
            rows = list(zip(items[:n], items[n:2 * n], items[2 * n:], strict=True))
        else:
            rows = [tuple(as_list(row, 3, "combination value"))
                    for row in as_list(items, n, "combination values")]
        seen = [as_float(r[0], "value time") for r in rows]
        values = [as_opt_float(r[1], "value") for r in rows]
        verdict = [as_bool(r[2], "verdict") for r in rows]
        if any(math.isinf(w) and w > 0 for w in seen):
            raise StateError("combination value time is +inf")
        self.seen, self.values, self.verdict = seen, values, verdict

    def describe(self, value: float | None, raising: bool) -> str:
        parts = [f"{signal} {num(self.values[i])} ({_OPS[op]} {num(level)})"
                 for i, (signal, op, level) in enumerate(self.conditions)]
        mode = "all of" if self.need_all else "any of"
        return f"{mode}: {', '.join(parts)}" if raising else f"no longer {mode}: {', '.join(parts)}"


@functools.lru_cache(maxsize=256)
def _index_of(conditions: tuple[Condition, ...]) -> dict[str, tuple[tuple[int, int, float], ...]]:
    """Per signal, its conditions as (position, opcode, level): one dict shared by every
    instance with these conditions (read-only), so it stays in the cache however many assets
    the rule covers."""
    index: dict[str, list[tuple[int, int, float]]] = {}
    for i, (signal, op, level) in enumerate(conditions):
        index.setdefault(signal, []).append((i, _OPCODE[op], level))
    return {signal: tuple(found) for signal, found in index.items()}
