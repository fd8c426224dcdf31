"""Shelving: a technician mutes a nuisance rule or asset until a time (ISA-18.2).

The rules keep running while shelved, so they always know whether the condition holds; only
what goes upstream changes:

- a raise of a shelved (rule, asset) is committed as usual (the episode is open, a restart keeps
  it) but its request is held back: the episode is *hidden*;
- the clear of a hidden episode is committed, and nothing is sent (nothing was);
- when the shelf ends (expiry or `unshelve`) and a hidden episode is still open, its raise goes
  upstream then, saying it held while shelved. A condition held with no new samples (report by
  exception) is thus judged at expiry on the rule's own state, without waiting for a sample;
- an episode raised before the shelf stays open and its clear still goes.

Hidden episodes are rule-state rows (`*shelved`, episode id), committed with the transitions
that hide or release them. Shelves themselves live in the outbox's `shelves` table: the CLI
writes it beside the daemon, `ShelfReader` reads it every second. Pure and clock-injected apart
from the reader: the pipeline calls `shape` under its commit lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from buffer.errors import OutboxError
from buffer.shelves import Shelf
from gateway.messages import iso_time
from gateway.model import RuleState, Transition, TransitionKind
from gateway.pipeline import Shaped

if TYPE_CHECKING:
    from rules.episode import RuleInstance

log = logging.getLogger("plantbridge.shelving")

HIDDEN_STATE = "*shelved"  # rule id of a hidden episode's row; rule ids never start with "*"
STATE_VERSION = 1


class InstanceLookup(Protocol):
    """The engine's view the shelving needs: the instance of (rule_id, asset), if built."""

    def __call__(self, rule_id: str, asset: str) -> RuleInstance | None: ...


@dataclass(frozen=True, slots=True)
class Hidden:
    rule_id: str
    asset: str
    raised_at: float


class Shelving:
    """The shelving message hook. `instance(rule_id, asset)` looks up the live rule instance."""

    def __init__(self, instance: InstanceLookup) -> None:
        self._instance = instance
        self._shelves: list[Shelf] = []
        self._by_rule: dict[str, Shelf] = {}
        self._by_asset: dict[str, Shelf] = {}
        self._hidden: dict[str, Hidden] = {}  # episode id -> what it is
        self._known = False  # no shelf is taken to have ended before the table was read once
        self.suppressed = 0  # raises held back
        self.released = 0  # raises sent when their shelf ended
        self.hidden_cleared = 0  # hidden episodes that cleared while shelved

    # --- shelves in force -----------------------------------------------------------------

    def set_shelves(self, shelves: Iterable[Shelf]) -> None:
        """The shelves in the table now (the reader calls this every second); logs changes."""
        new = {(s.kind, s.target): s for s in shelves}
        old = {(s.kind, s.target): s for s in self._shelves}
        for key, s in new.items():
            if old.get(key) != s:
                log.warning("%s %s shelved until %s: %s%s", s.kind, s.target, when(s.until),
                            s.reason, f" (by {s.shelved_by})" if s.shelved_by else "")
        for key in old.keys() - new.keys():
            log.warning("%s %s no longer shelved", *key)
        self._shelves = list(new.values())
        self._known = True
        self._by_rule = {s.target: s for s in self._shelves if s.kind == "rule"}
        self._by_asset = {s.target: s for s in self._shelves if s.kind == "asset"}

    def shelf_of(self, rule_id: str, asset: str, now: float) -> Shelf | None:
        for s in (self._by_rule.get(rule_id), self._by_asset.get(asset)):
            if s is not None and s.until > now:
                return s
        return None

    # --- restart ---------------------------------------------------------------------------

    def restore(self, states: Iterable[RuleState]) -> int:
        n = 0
        for s in states:
            if s.rule_id != HIDDEN_STATE or s.data is None:
                continue
            try:
                version, rule_id, asset, raised_at = s.data
                if version != STATE_VERSION:
                    raise ValueError(f"version {version!r}")
                self._hidden[s.asset] = Hidden(str(rule_id), str(asset), float(raised_at))
                n += 1
            except (ValueError, TypeError) as exc:
                log.error("hidden episode %s does not fit, forgetting it: %s", s.asset, exc)
        return n

    # --- the hook ----------------------------------------------------------------------------

    def shape(self, transitions: Sequence[Transition], now: float,
              sinks: Sequence[str]) -> Shaped:
        if not transitions and not self._hidden:
            return Shaped(transitions)
        out: list[Transition] = []
        states: list[RuleState] = []
        for t in transitions:
            hidden = self._hidden.get(t.episode_id)
            if t.kind is TransitionKind.RAISED:
                shelf = self.shelf_of(t.rule_id, t.asset, now)
                if shelf is not None and hidden is None:
                    self._hidden[t.episode_id] = Hidden(t.rule_id, t.asset, t.ts)
                    states.append(RuleState(HIDDEN_STATE, t.episode_id, "",
                                            [STATE_VERSION, t.rule_id, t.asset, t.ts]))
                    self.suppressed += 1
                    log.info("raise of %s on %s not sent: %s %s is shelved (%s)", t.rule_id,
                             t.asset, shelf.kind, shelf.target, t.episode_id)
                    continue
            elif hidden is not None:
                del self._hidden[t.episode_id]
                states.append(RuleState(HIDDEN_STATE, t.episode_id, "", None))
                self.hidden_cleared += 1
                continue
            out.append(t)
        out.extend(self._release(now, states))
        return Shaped(out, (), states)

    def _release(self, now: float, states: list[RuleState]) -> list[Transition]:
        """Raises of hidden episodes whose shelf ended and whose condition still holds."""
        out: list[Transition] = []
        if not self._known:
            return out
        for episode_id, h in list(self._hidden.items()):
            if self.shelf_of(h.rule_id, h.asset, now) is not None:
                continue
            del self._hidden[episode_id]
            states.append(RuleState(HIDDEN_STATE, episode_id, "", None))
            inst = self._instance(h.rule_id, h.asset)
            if inst is None or not inst.active or inst.episode_id != episode_id:
                continue  # gone without a clear we saw (reload): nothing was sent, nothing to do
            self.released += 1
            reason = (f"{inst.describe(inst.last_value, True)}; held while shelved since "
                      f"{iso_time(h.raised_at)}")
            log.warning("shelf ended and %s on %s still holds: raising %s now", h.rule_id,
                        h.asset, episode_id)
            out.append(_raise_now(inst, episode_id, now, reason))
        return out

    # --- observation -------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """For the status page and /metrics."""
        return {
            "shelves": [{"kind": s.kind, "target": s.target, "until": when(s.until),
                         "remaining_seconds": round(s.until - now, 1), "reason": s.reason,
                         "shelved_by": s.shelved_by}
                        for s in self._shelves if s.until > now],
            "hidden_episodes": [{"episode_id": e, "rule_id": h.rule_id, "asset": h.asset,
                                 "raised_at": iso_time(h.raised_at)}
                                for e, h in sorted(self._hidden.items())],
            "suppressed": self.suppressed,
            "released": self.released,
            "hidden_cleared": self.hidden_cleared,
        }


def when(ts: float) -> str:
    """A time from the shelves table in words; one written by hand may be out of range."""
    try:
        return iso_time(ts)
    except (ValueError, OverflowError, OSError):
        return f"{ts:.0f} (seconds since 1970)"


def _raise_now(inst: RuleInstance, episode_id: str, now: float, reason: str) -> Transition:
    from gateway.model import RequestDetails

    request = inst.request or RequestDetails(title=f"{inst.rule_id} on {inst.asset}",
                                             priority=inst.severity)
    return Transition(kind=TransitionKind.RAISED, rule_id=inst.rule_id, asset=inst.asset,
                      signal=inst.signal, episode_id=episode_id, severity=inst.severity,
                      value=inst.last_value, ts=now, reason=reason, request=request)


class ShelfStore(Protocol):
    async def shelves(self, now: float | None = None) -> list[Shelf]: ...


async def read_shelves(store: ShelfStore, shelving: Shelving, clock: Callable[[], float],
                       interval_seconds: float = 1.0) -> None:
    """Keep `shelving` in step with the table the CLI writes, until cancelled. A failed read
    (disk trouble) keeps the shelves known and is logged once until reads work again."""
    failing = False
    while True:
        try:
            shelving.set_shelves(await store.shelves(clock()))
            if failing:
                log.warning("shelves readable again")
            failing = False
        except OutboxError as exc:
            if not failing:
                log.error("cannot read the shelves, keeping the last known: %s", exc)
            failing = True
        await asyncio.sleep(interval_seconds)
