"""The part every rule kind shares: one asset, one open episode at most, debounce, muting.

A rule instance is bound to one asset. Its episode id is derived from the rule, the asset and the
time of the sample or tick that raised it, so replaying the same data gives the same ids. Kinds
only decide whether their condition holds ("raw"); `_step` turns that into raises and clears
with `on_delay_seconds` / `off_delay_seconds`. Bad quality never raises or clears a process
alarm: it cancels a pending debounce and leaves the episode as it is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from mypy_extensions import mypyc_attr

from gateway.model import (
    EpisodeState,
    RequestDetails,
    RuleState,
    Sample,
    Transition,
    TransitionKind,
)
from rules.state import (
    VERSION,
    StateError,
    as_bool,
    as_float,
    as_int,
    as_list,
    as_opt_float,
    as_str,
    check_version,
)

# What a handler returns: usually nothing, one transition, or two when a delay had run out
# before the sample came (`RuleInstance._overdue`): the delayed flip, then the sample's own.
Handler = Callable[[Sample], "Transition | tuple[Transition, ...] | None"]
_RAISED: Final = TransitionKind.RAISED
_CLEARED: Final = TransitionKind.CLEARED


def both(first: Transition, then: Transition | tuple[Transition, ...] | None
         ) -> Transition | tuple[Transition, ...]:
    """`first`, then what the sample itself caused."""
    if then is None:
        return first
    return (first, *then) if isinstance(then, tuple) else (first, then)


def num(value: float | None) -> str:
    """A value as a technician reads it: 7.4, 0.125, 1.2e+06; never 7.400000000001."""
    return "n/a" if value is None else _num(value + 0.0)  # -0.0 reads as 0


# A transition formats the rule's constant levels and its value (twice at a raise: the reason
# and the request texts); formatting a float costs ~400 ns, a cache hit ~70 ns.
@functools.lru_cache(maxsize=1024)
def _num(value: float) -> str:
    return f"{round(value, 3):g}"


def episode_id(rule_id: str, asset: str, ts: float) -> str:
    return f"{rule_id}/{asset}/{round(ts * 1000)}"


_generation = 0  # the last `Changed.clear` generation handed out, over every engine


def _next_generation() -> int:
    global _generation
    _generation += 1
    return _generation


class Changed:
    """The instances whose stored state changed since `clear` (an engine's dirty set), each
    once, in the order they first changed.

    A list and a mark on each instance (`RuleInstance._changed`, the generation of the
    collection it was added to) instead of a set: an instance adds itself for nearly every
    sample it sees, and a set emptied at every commit group regrew and rehashed its table to
    thousands of entries once per group, a tenth of the rule engine's cost. `clear` starts a
    new generation, so no instance needs its mark reset. An instance is in at most one
    `Changed` at a time (its engine's).
    """

    __slots__ = ("_generation", "_holes", "_items")

    def __init__(self) -> None:
        self._generation = _next_generation()
        self._items: list[RuleInstance] = []
        self._holes = 0  # entries discarded but still in `_items` (see `discard`)

    def add(self, inst: RuleInstance) -> None:
        if inst._changed != self._generation:
            inst._changed = self._generation
            self._items.append(inst)

    def discard(self, inst: RuleInstance) -> None:
        """Unmark it; its entry goes at the next read. A restore or a reload discards
        thousands, and removing each from the list would make that quadratic."""
        if inst._changed == self._generation:
            inst._changed = 0
            self._holes += 1

    def clear(self) -> None:
        self._generation = _next_generation()
        self._items = []
        self._holes = 0

    def _live(self) -> list[RuleInstance]:
        if self._holes:  # drop discarded entries; one added again after it has two: keep one
            generation = self._generation
            self._items = list(dict.fromkeys(
                [inst for inst in self._items if inst._changed == generation]))
            self._holes = 0
        return self._items

    def __contains__(self, inst: RuleInstance) -> bool:
        return inst._changed == self._generation

    def __iter__(self) -> Iterator[RuleInstance]:
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())

    def __bool__(self) -> bool:
        return bool(self._live())


class _Nowhere(Changed):
    """Where an instance outside any engine reports its changes: it keeps nothing."""

    __slots__ = ()

    def add(self, inst: RuleInstance) -> None:
        return None


NOWHERE: Final[Changed] = _Nowhere()


class RequestTemplate:
    """Request details from the rule file; {asset}, {signal}, {value}, {rule_id} filled at raise."""

    __slots__ = ("breakdown", "failure_code", "long_text", "priority", "title")

    def __init__(self, title: str, priority: int, failure_code: str, breakdown: bool,
                 long_text: str) -> None:
        self.title = title
        self.priority = priority
        self.failure_code = failure_code
        self.breakdown = breakdown
        self.long_text = long_text

    def render(self, rule_id: str, asset: str, signal: str, value: float | None) -> RequestDetails:
        names = {"asset": asset, "signal": signal, "value": num(value), "rule_id": rule_id}
        return RequestDetails(title=self.title.format(**names), priority=self.priority,
                              failure_code=self.failure_code, breakdown=self.breakdown,
                              long_text=self.long_text.format(**names))


@mypyc_attr(allow_interpreted_subclasses=True)
class RuleInstance:
    """Base of every rule kind. Subclasses implement `evaluate` and, when time matters, `tick`."""

    __slots__ = ("_changed", "_dirty", "_fingerprint", "_request", "_suppress",
                 "_suppressed_by", "active", "asset", "episode_id", "key", "last_value",
                 "off_delay", "on_delay", "pending_since", "raised_at", "request", "rule_id",
                 "severity", "signal", "suppressed")

    def __init__(self, rule_id: str, asset: str, signal: str, severity: int,
                 request: RequestTemplate, fingerprint: str,
                 suppress: Iterable[tuple[str, float]] = (), on_delay: float = 0.0,
                 off_delay: float = 0.0) -> None:
        self.rule_id = rule_id
        self.asset = asset
        self.key = (rule_id, asset)  # as the engine files it
        self.signal = signal
        self.severity = severity
        self._request = request
        self.request: RequestDetails | None = None  # rendered at the last raise
        self._fingerprint = fingerprint
        self._suppress = tuple(suppress)
        self._suppressed_by: set[str] = set()
        self.suppressed = False
        self.on_delay = on_delay
        self.off_delay = off_delay
        self.active = False
        self.episode_id = ""
        self.raised_at = 0.0
        self.pending_since: float | None = None
        self.last_value: float | None = None
        # Where to report a change a restart must keep (the engine's dirty set; see
        # rules/state.py). Outside an engine: nowhere. `_changed` is `Changed`'s mark.
        self._dirty: Changed = NOWHERE
        self._changed = 0

    def needs_tick(self) -> bool:
        """Whether time alone can change this rule (the engine ticks only those)."""
        return self.on_delay > 0.0 or self.off_delay > 0.0

    # --- the Rule protocol -----------------------------------------------------------------

    def signals(self) -> tuple[str, ...]:
        """Signals whose samples this rule evaluates (not counting mute signals)."""
        return (self.signal,)

    def suppress_while(self) -> tuple[tuple[str, float], ...]:
        """(signal, value) pairs that mute this rule."""
        return self._suppress

    def keys(self) -> list[tuple[str, str]]:
        own = list(self.signals())
        return [(self.asset, s) for s in [*own, *(s for s, _ in self._suppress if s not in own)]]

    def handlers(self) -> list[tuple[tuple[str, str], Handler]]:
        """(asset, signal) -> the bound method the engine calls for that key."""
        out: list[tuple[tuple[str, str], Handler]] = [((self.asset, s), self.evaluate)
                                                      for s in self.signals()]
        out.extend(((self.asset, s), self._on_mute_signal) for s, _ in self._suppress)
        return out

    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None:
        raise NotImplementedError

    def _overdue(self, ts: float) -> Transition | None:
        """With a delay pending: if it ran out before `ts` (this sample's time), the flip a
        tick would have made at its deadline. Device time can run ahead of our ticks: the
        broker's backlog after a restart, a device's buffered readings, a batch of samples in
        one payload. Judged only at the next tick, the excursion (or the return to normal)
        that outlasted its delay would be lost when the next sample opposes it first."""
        since = self.pending_since
        assert since is not None
        delay = self.off_delay if self.active else self.on_delay
        deadline = since + delay
        if ts <= deadline:  # at the deadline itself the sample decides, as it always did
            return None
        if deadline - since < delay:  # rounding: the tick must see the delay run out
            deadline = math.nextafter(deadline, math.inf)
        return self.tick(deadline)

    def _cancel(self) -> None:
        """Bad data: a pending on/off delay is dropped."""
        if self.pending_since is not None:
            self.pending_since = None
            self._dirty.add(self)

    def tick(self, now: float) -> Transition | None:
        """Debounce expiry without a new sample: the last value is taken to still hold."""
        since = self.pending_since
        if since is None:
            return None
        delay = self.off_delay if self.active else self.on_delay
        if now - since < delay:
            return None
        return self._flip(now, self.last_value, now - since)

    def restore(self, episode: EpisodeState) -> None:
        """After a restart the episode is still open: start active, so no second raise.

        State loaded before (`load`) that already holds this episode is kept as it is.
        """
        if self.active and self.episode_id == episode.episode_id:
            return
        self.active = True
        self.episode_id = episode.episode_id
        self.raised_at = episode.raised_at
        self.pending_since = None
        self._dirty.add(self)

    def drop_episode(self) -> None:
        """Forget an episode the outbox does not hold open (no transition: it is not ours)."""
        self.active = False
        self.episode_id = ""
        self.request = None
        self.pending_since = None
        self._dirty.add(self)

    def resume(self, now: float, grace: float) -> None:
        """After a start, once state is restored. Only rules about silence need it (stale)."""

    def close(self, now: float, reason: str) -> Transition | None:
        """Clear an open episode because the rule goes away (reload)."""
        if not self.active:
            return None
        return self._make(_CLEARED, now, self.last_value, reason)

    def fingerprint(self) -> str:
        return self._fingerprint

    def episode(self) -> EpisodeState | None:
        if not self.active:
            return None
        return EpisodeState(self.rule_id, self.asset, self.episode_id, self.raised_at,
                            self.severity)

    # --- durable state (rules/state.py) ---------------------------------------------------

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a restart must keep, as msgpack-able data (see `load`).

        (version, active, episode_id, raised_at, pending_since, last_value, request of the open
        episode (title, priority, failure_code, breakdown, long_text) or None, mute signals now
        muting, what the kind adds). Times are absolute, on the gateway's time base. Tuples:
        msgpack writes them as arrays, and building one is the cheapest thing Python does,
        which matters because the engine snapshots every changed instance once per commit.
        """
        r = self.request
        if r is None and not self._suppressed_by:  # the usual case: no open request, unmuted
            return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                    self.last_value, None, (), self._snapshot_kind())
        return self._snapshot_with(self._snapshot_kind())

    def _snapshot_with(self, kind: Any) -> tuple[Any, ...]:
        """The general `snapshot` (any request, any mutes) with `kind` as the kind's part."""
        r = self.request
        return (VERSION, self.active, self.episode_id, self.raised_at, self.pending_since,
                self.last_value,
                None if r is None else (r.title, r.priority, r.failure_code, r.breakdown,
                                        r.long_text),
                sorted(self._suppressed_by) if self._suppressed_by else (), kind)

    def durable(self, log: list[RuleState]) -> tuple[Any, ...]:
        """What `RuleEngine.take_dirty` stores for this instance: the `snapshot`, except for a
        kind whose state is stored in more rows than its own (a rate window: the rows it
        adds go to `log`, see rules/windowlog.py)."""
        return self.snapshot()

    def load(self, data: Any, parts: Mapping[int, bytes] | None = None) -> None:
        """Take back a `snapshot` or a `durable` form (possibly msgpack-round-tripped: lists
        for tuples); `parts`: the instance's extra rows by number, for a kind that has them.

        Raises `StateError` and changes nothing when the data does not fit this instance.
        """
        items = check_version(data, 9)
        active = as_bool(items[1], "active")
        episode = as_str(items[2], "episode_id")
        raised_at = as_float(items[3], "raised_at")
        pending = as_opt_float(items[4], "pending_since")
        last = as_opt_float(items[5], "last_value")
        request = None
        if items[6] is not None:
            title, priority, code, breakdown, text = as_list(items[6], 5, "request")
            request = RequestDetails(as_str(title, "title"), as_int(priority, "priority"),
                                     as_str(code, "failure_code"),
                                     as_bool(breakdown, "breakdown"), as_str(text, "long_text"))
        muting = {as_str(s, "suppressed_by") for s in as_list(items[7], None, "suppressed_by")}
        if not muting <= {s for s, _ in self._suppress}:
            raise StateError(f"muted by {sorted(muting)}: not mute signals of this rule")
        self._load_kind(items[8])  # checks before it changes anything
        self.active, self.episode_id, self.raised_at = active, episode, raised_at
        self.pending_since, self.last_value, self.request = pending, last, request
        self._suppressed_by = muting
        self.suppressed = bool(muting)

    def log_keys(self) -> list[int]:
        """Numbers of the extra rows `durable` has stored for this instance (none but for a
        rate window: rules/windowlog.py)."""
        return []

    def _snapshot_kind(self) -> Any:
        """What this kind adds to the snapshot (windows, last-seen times)."""
        return None

    def _load_kind(self, data: Any) -> None:
        """Take back `_snapshot_kind`; check everything before changing anything."""
        if data is not None:
            raise StateError(f"{type(self).__name__} keeps no extra state, got {data!r}")

    # --- shared machinery -----------------------------------------------------------------

    def _on_mute_signal(self, sample: Sample) -> Transition | None:
        """A mute signal (maintenance_mode, NE 107 status): muting blocks raises, not clears.
        When it changes the muting, a delay that ran out before it flips first (`_overdue`)."""
        value = sample.value
        if value is None or sample.quality == 2:  # bad: keep the last known state
            return None
        if len(self._suppress) == 1:  # the usual case, without building sets
            muted = value == self._suppress[0][1]
            if muted is self.suppressed:
                return None
        by = self._suppressed_by
        now = {signal for signal, equals in self._suppress
               if signal == sample.signal and value == equals}
        mine = {signal for signal, _ in self._suppress if signal == sample.signal}
        if (by & mine) == now:
            return None  # no change
        overdue = None
        if self.pending_since is not None:
            overdue = self._overdue(sample.source_ts)
        by -= mine
        by |= now
        self._dirty.add(self)
        self.suppressed = bool(by)
        if self.suppressed and not self.active:
            self.pending_since = None
        return overdue

    def _step(self, raw: bool, ts: float, value: float | None) -> Transition | None:
        """Debounce: `raw` must hold for the on (or off) delay before the episode changes."""
        if raw is self.active or (self.suppressed and not self.active):
            if self.pending_since is not None:
                self.pending_since = None
                self._dirty.add(self)
            return None
        delay = self.off_delay if self.active else self.on_delay
        since = self.pending_since
        if delay > 0.0:
            self._dirty.add(self)  # a delay starts, or runs on with a new last value
            if since is None:
                self.pending_since = ts
                return None
            if ts - since < delay:
                return None
        held = 0.0 if since is None else ts - since
        return self._flip(ts, value, held)

    def _flip(self, ts: float, value: float | None, held: float) -> Transition:
        self.pending_since = None
        raising = not self.active
        reason = self.describe(value, raising)
        if held > 0.0:
            reason += f" for {num(held)} s"
        return self._make(_RAISED if raising else _CLEARED, ts, value, reason)

    def _make(self, kind: TransitionKind, ts: float, value: float | None,
              reason: str) -> Transition:
        self._dirty.add(self)
        if kind is _RAISED:
            self.active = True
            self.episode_id = episode_id(self.rule_id, self.asset, ts)
            self.raised_at = ts
            self.request = self._request.render(self.rule_id, self.asset, self.signal, value)
        else:
            self.active = False
        request = self.request or self._request.render(self.rule_id, self.asset, self.signal,
                                                       value)
        return Transition(kind=kind, rule_id=self.rule_id, asset=self.asset, signal=self.signal,
                          episode_id=self.episode_id, severity=self.severity, value=value,
                          ts=ts, reason=reason, request=request)

    def describe(self, value: float | None, raising: bool) -> str:
        """Plain words for a raise or clear, e.g. 'vibration 7.4 above 7.1'."""
        raise NotImplementedError
