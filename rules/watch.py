"""Rules about the data itself (stale, bad quality) and combinations of conditions.

Stale and bad-quality rules are kept apart from process alarms: they say a sensor is silent or
failed, never that the machine is in trouble. A combination rule judges the latest value of each
signal, if it is no older than `max_age_seconds`; a condition it cannot judge (no value, too old,
bad quality) is unknown, and unknown neither raises nor clears.
"""

from __future__ import annotations

from gateway.model import Quality, Sample, Transition, TransitionKind
from rules.episode import RequestTemplate, RuleInstance, num

_BAD = Quality.BAD


class StaleRule(RuleInstance):
    """No sample at all for longer than the limit. Watching starts at the first tick or sample."""

    __slots__ = ("last_seen", "limit")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str, *, limit: float,
                 suppress: tuple[tuple[str, float], ...] = ()) -> None:
        super().__init__(rule_id, asset, signal, severity, request, fingerprint, suppress)
        self.limit = limit
        self.last_seen: float | None = None

    def needs_tick(self) -> bool:
        return True

    def evaluate(self, sample: Sample) -> Transition | None:
        ts = sample.source_ts
        gap = 0.0 if self.last_seen is None else ts - self.last_seen
        self.last_seen = ts
        if sample.value is not None:
            self.last_value = sample.value
        if not self.active:
            return None
        return self._make(TransitionKind.CLEARED, ts, sample.value,
                          f"{self.signal} reporting again after {num(gap)} s")

    def tick(self, now: float) -> Transition | None:
        seen = self.last_seen
        if seen is None:
            self.last_seen = now
            return None
        if self.active or self.suppressed or now - seen <= self.limit:
            return None
        return self._make(TransitionKind.RAISED, now, self.last_value,
                          f"no {self.signal} data for {num(now - seen)} s "
                          f"(limit {num(self.limit)} s)")

    def describe(self, value: float | None, raising: bool) -> str:
        return f"{self.signal} {'silent' if raising else 'reporting'}"


class BadQualityRule(RuleInstance):
    """Bad quality without a break for longer than the limit: a failed sensor or link."""

    __slots__ = ()

    def needs_tick(self) -> bool:
        return True

    def evaluate(self, sample: Sample) -> Transition | None:
        bad = sample.value is None or sample.quality is _BAD
        if not bad:
            self.last_value = sample.value
        return self._step(bad, sample.source_ts, sample.value)

    def describe(self, value: float | None, raising: bool) -> str:
        if raising:
            return f"{self.signal} quality bad"
        return f"{self.signal} quality good again ({num(value)})"


Condition = tuple[str, str, float]  # (signal, "above" | "below" | "equals", level)
_OPS = {"above": ">", "below": "<", "equals": "="}


class CombinationRule(RuleInstance):
    """All of (or any of) several conditions on the latest value of each signal."""

    __slots__ = ("conditions", "latest", "max_age", "need_all")

    def __init__(self, rule_id: str, asset: str, severity: int, request: RequestTemplate,
                 fingerprint: str, *, conditions: tuple[Condition, ...], need_all: bool,
                 max_age: float, suppress: tuple[tuple[str, float], ...] = (),
                 on_delay: float = 0.0, off_delay: float = 0.0) -> None:
        super().__init__(rule_id, asset, conditions[0][0], severity, request, fingerprint,
                         suppress, on_delay, off_delay)
        self.conditions = conditions
        self.need_all = need_all
        self.max_age = max_age
        self.latest: dict[str, tuple[float, float]] = {}  # signal -> (ts, value)

    def signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c[0] for c in self.conditions))

    def evaluate(self, sample: Sample) -> Transition | None:
        v = sample.value
        ts = sample.source_ts
        if v is None or sample.quality is _BAD:
            self.latest.pop(sample.signal, None)
        else:
            self.latest[sample.signal] = (ts, v)
        return self._judge(ts)

    def tick(self, now: float) -> Transition | None:
        if self.pending_since is None:
            return None
        return self._judge(now)

    def _judge(self, now: float) -> Transition | None:
        raw = self._holds(now)
        if raw is None:
            self.pending_since = None
            return None
        primary = self.latest.get(self.signal)
        value = primary[1] if primary is not None else None
        self.last_value = value
        return self._step(raw, now, value)

    def _holds(self, now: float) -> bool | None:
        """True, False, or None when the answer depends on a value we do not have."""
        unknown = False
        for signal, op, level in self.conditions:
            got = self.latest.get(signal)
            if got is None or now - got[0] > self.max_age:
                unknown = True
                continue
            v = got[1]
            ok = v > level if op == "above" else v < level if op == "below" else v == level
            if ok and not self.need_all:
                return True
            if not ok and self.need_all:
                return False
        return None if unknown else self.need_all

    def describe(self, value: float | None, raising: bool) -> str:
        parts = []
        for signal, op, level in self.conditions:
            got = self.latest.get(signal)
            parts.append(f"{signal} {num(got[1]) if got else 'n/a'} ({_OPS[op]} {num(level)})")
        head = ("all of" if self.need_all else "any of") if raising else "no longer"
        return f"{head}: {', '.join(parts)}"
