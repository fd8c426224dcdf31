"""The clear of a request raised again (`closed_upstream = "new_request"`).

A record completed upstream while its condition is still active may be answered by a new
request under the episode `<episode>~re<8 hex>` (gateway/status_poll.py). That episode has a row
of its own in the outbox (`OutboxStore.open_reraise_episode`): the poller follows its record,
the page and `trace` show it, and it closes when its parent closes, with a clear of its own.

What an integrator expects when the condition finally clears:

- the re-raised record gets the clear (it is the open one, and ours);
- the old record, which a planner completed, gets none: a completed record is left as the
  planner left it (REST would otherwise move a `resolved` request to `cleared`; SAP's sink
  already reads a notification before clearing and leaves a completed one alone).

Two paths give this, exactly once whatever is killed when:

1. A pipeline message hook (`hook`), under the commit lock: the parent's clear is built for
   every sink but the ones where it was re-raised, and the re-raise's clear for those, in the
   same transaction as the parent's clear.
2. A sweep (`sweep`), at start and after each clear of a parent: every open re-raise episode
   whose parent is closed (or gone) is closed, its clear enqueued under the same key as in 1
   (ignored when 1 made it). This covers a kill between the commit and the bookkeeping, and a
   re-raise of a re-raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buffer.errors import StorageError
from gateway.messages import messages_for
from gateway.model import OutboxMessage, RequestDetails, Transition, TransitionKind
from gateway.pipeline import Shaped

if TYPE_CHECKING:
    from buffer.operator import ReraiseEpisode
    from buffer.store import OutboxStore

log = logging.getLogger("plantbridge.reraise")

RERAISE_SUFFIX_CHARS = 11  # "~re" and 8 hex digits (status_poll.reraise_episode_id)
SWEEP_SECONDS = 60.0  # a sweep without a clear to wake it: parents gone with the retention


def parent_of(episode_id: str) -> str:
    return episode_id[:-RERAISE_SUFFIX_CHARS]


@dataclass(frozen=True, slots=True)
class OpenReraise:
    episode_id: str
    rule_id: str
    asset: str
    severity: int
    sinks: frozenset[str]


def reraise_clear(child: OpenReraise, ts: float, reason: str, signal: str = "",
                  value: float | None = None) -> Transition:
    """The clear of a re-raise episode (its key: `cleared:<its reference>:<sink>`)."""
    return Transition(TransitionKind.CLEARED, child.rule_id, child.asset, signal,
                      child.episode_id, child.severity, value, ts,
                      f"{reason} (request raised again after the first was completed upstream)",
                      RequestDetails(title="", priority=child.severity))


class ReraiseClears:
    """Sends each re-raise episode's clear when its parent clears; see the module docstring."""

    def __init__(self, outbox: OutboxStore, site: str, wake_forwarders: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._outbox = outbox
        self._site = site
        self._wake_forwarders = wake_forwarders
        self._clock = clock
        self._by_parent: dict[str, OpenReraise] = {}
        self.wake = asyncio.Event()
        self.cleared = 0  # re-raise episodes closed by this process

    def opened(self, parent: str, child: OpenReraise) -> None:
        """A re-raise episode is open (its request and row committed)."""
        known = self._by_parent.get(parent)
        sinks = child.sinks | (known.sinks if known is not None else frozenset())
        self._by_parent[parent] = OpenReraise(child.episode_id, child.rule_id, child.asset,
                                              child.severity, sinks)

    def hook(self, transitions: Sequence[Transition], now: float,
             sinks: Sequence[str]) -> Shaped:
        """Pipeline message hook: a parent's clear goes to the sinks where its record is
        still ours to clear, and the re-raise's clear to the ones where it was raised again."""
        if not self._by_parent:
            return Shaped(transitions)
        keep: list[Transition] = []
        messages: list[OutboxMessage] = []
        for t in transitions:
            child = self._by_parent.get(t.episode_id) if t.kind is TransitionKind.CLEARED \
                else None
            if child is None:
                keep.append(t)
                continue
            others = [s for s in sinks if s not in child.sinks]
            messages += messages_for(t, others, self._site)
            messages += messages_for(reraise_clear(child, t.ts, t.reason, t.signal, t.value),
                                     sorted(child.sinks), self._site)
        return Shaped(keep, messages)

    def on_transition(self, t: Transition) -> None:
        """Pipeline listener: a parent cleared (committed): close its re-raise soon."""
        if t.kind is TransitionKind.CLEARED and t.episode_id in self._by_parent:
            self.wake.set()

    async def sweep(self) -> int:
        """Close every open re-raise episode whose parent is closed, with its clear; learn
        the others. Returns how many were closed (a re-raise of a re-raise: the next pass)."""
        closed = 0
        for ep in await self._outbox.open_reraises():
            parent = parent_of(ep.episode_id)
            child = _open_reraise(ep)
            if ep.parent_known and ep.parent_cleared_at is None:
                self.opened(parent, child)
                continue
            ts = ep.parent_cleared_at if ep.parent_cleared_at is not None else self._clock()
            t = reraise_clear(child, ts, "the condition cleared")
            await self._outbox.commit([t], messages_for(t, sorted(child.sinks), self._site))
            self._by_parent.pop(parent, None)
            closed += 1
            log.info("re-raise episode %s closed with its parent %s", ep.episode_id, parent)
        if closed:
            self.cleared += closed
            self._wake_forwarders()
        return closed

    async def run(self) -> None:
        """Sweep at start, after each parent's clear, and every SWEEP_SECONDS."""
        while True:
            self.wake.clear()
            try:
                while await self.sweep():
                    pass
            except StorageError as exc:
                log.warning("re-raise clears: outbox: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SWEEP_SECONDS)


def _open_reraise(ep: ReraiseEpisode) -> OpenReraise:
    return OpenReraise(ep.episode_id, ep.rule_id, ep.asset, ep.severity, frozenset(ep.sinks))
