"""Drives one sink from the outbox as a continuous pipeline: lease, send, settle each record.

A bounded set of requests is in flight (the upstream's `max_in_flight`, paced by its token
bucket); each finished request frees its slot at once and the pump leases again, by priority
(gateway.model.Priority) then age, so a fresh critical raise waits at most one round trip for a
slot, whatever is queued behind it. A commit wakes the pump (`wake`). The outbox work runs in
rounds, back to back while there is work: one transaction (one call on the database thread, one
commit) settles every request that finished since the last round, with its attempt history,
and leases the next window, marked sent. A kill resends only what was in flight (and what had
finished in the last round's few milliseconds).

A record leaves the outbox only after the sink classified it ACCEPTED (or REJECTED for good). A
cancelled send leaves the record pending: it is sent again under the same idempotency key.
While the upstream is down, records wait on the breaker's probe (gateway/upstream/retry_policy.py
`Breaker`), not on their own backoff; a request without an answer for the first-byte timeout
marks the upstream hung and opens the breaker.

Every settled send is also written to the attempt history (`plantbridge trace`), in the same
transaction, and told as a story in the log (gateway/story.py): accepts (no line is built when
its level is off), retry bursts, dead letters, a failing or hung link.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from buffer.errors import StorageError
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.story import DeliveryStory
from gateway.upstream.forwarder_config import ForwardingConfig
from gateway.upstream.forwarder_health import ForwarderStats, retry_delay
from gateway.upstream.forwarder_rounds import Done, ForwarderRounds
from gateway.upstream.lanes import ReadyHeads
from gateway.upstream.limits import (
    DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS,
    UNDECLARED_LIMITS,
    Deadlines,
    InFlightCap,
    TokenBucket,
    UpstreamLimits,
)
from gateway.upstream.retry_policy import Breaker, BreakerState, http_status

if TYPE_CHECKING:
    from buffer.store import OutboxStore

# The config lives in forwarder_config, the rounds in forwarder_rounds, the link's health
# (stats, breaker feed, hung watchdog) in forwarder_health; these names stay importable here.
__all__ = ["BreakerState", "Forwarder", "ForwarderStats", "ForwardingConfig", "http_status",
           "retry_delay"]


SendOne = Callable[[OutboxRecord], Awaitable[Delivery]]


def _sender(sink: Sink) -> SendOne:
    """The sink's one-record send when it has one (every HTTP sink), else a batch of one."""
    one: SendOne | None = getattr(sink, "send_one", None)
    if one is not None:
        return one

    async def via_batch(rec: OutboxRecord) -> Delivery:
        got = [d for d in await sink.send([rec]) if d.record_id == rec.id]
        return got[0] if got else Delivery(rec.id, Outcome.RETRY, reason="sink gave no outcome")
    return via_batch


class Forwarder(ForwarderRounds):
    """Drives one sink from the outbox (the module docstring tells how)."""

    def __init__(self, sink: Sink, outbox: OutboxStore, cfg: ForwardingConfig,
                 wake: asyncio.Event, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self._outbox = outbox
        self._cfg = cfg
        self._wake = wake
        self._clock = clock
        self._send_one = _sender(sink)
        # an HTTP sink carries its config's limits; any other sink gets UNDECLARED_LIMITS
        self.limits: UpstreamLimits = getattr(sink, "limits", UNDECLARED_LIMITS)
        first_byte = float(getattr(sink, "first_byte_timeout_seconds",
                                   DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS))
        self._hung_after = cfg.hung_after_seconds or first_byte
        self._bucket = TokenBucket(self.limits.max_requests_per_second, self.limits.burst)
        self._cap = InFlightCap(self.limits.max_in_flight, self.limits.adaptive)
        self._breaker = Breaker(cfg.breaker_failures, cfg.retry_initial_seconds,
                                min(cfg.probe_max_seconds, cfg.retry_max_seconds))
        self._rng = random.Random()
        self._in_flight: dict[int, float] = {}  # record id -> monotonic start, oldest first
        # senders waiting for a record (the future they wait on): a task each, started as the
        # window first needs them and kept (a task per request was about 4 % of the loop in a
        # drain, py-spy)
        self._idle_senders: list[asyncio.Future[OutboxRecord]] = []
        self._send_limits = Deadlines(cfg.send_timeout_seconds)  # one timer for every send
        self._hung_until = -1.0  # the start of the latest request already reported hung
        self._deadline: asyncio.TimerHandle | None = None  # the hung timer (`_deadlines`)
        self._deadline_at = 0.0  # when it fires (time.monotonic)
        self._unsettled: set[int] = set()  # sent, not yet settled: never leased twice
        # what this forwarder marks sent after this instant the lease skips in SQL (marks up to
        # it are a previous life's sends, to be sent again; `_unsettled` still guards ours)
        self._since = clock()
        self._done: list[Done] = []
        self._ready = ReadyHeads()  # leased ahead, marked sent, waiting for a slot
        self._kick = asyncio.Event()  # the pump has something to look at
        self._refill = asyncio.Event()  # a round has something to do: settle, lease or both
        self._woken = True  # a commit happened since the last lease: lease now
        self.stats = ForwarderStats(in_flight_cap=self._cap.current)
        self._story = DeliveryStory(sink.name)
        self.idle = asyncio.Event()  # set while nothing is between send and settle
        self.idle.set()
        self._quiescing = False

    def quiesce(self) -> None:
        """Start no more sends (a stop is coming): `idle` is set once what is in flight is
        settled, however long the backlog. Records leased ahead are unmarked when `run` ends."""
        self._quiescing = True
        self._set_idle()
        self._kick.set()

    async def run(self) -> None:
        """Deliver until cancelled. A storage fault pauses delivery; it never ends it."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_wake(), name=f"forward-{self.sink.name}-wake")
                tg.create_task(self._tick(), name=f"forward-{self.sink.name}-tick")
                tg.create_task(self._rounds(), name=f"forward-{self.sink.name}-rounds")
                await self._pump(tg)
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            # records leased ahead but never sent: no unknown outcome for a sink to wait on
            unsent = [r.id for r in self._ready.take_all()]
            with contextlib.suppress(StorageError):
                await asyncio.shield(self._outbox.unmark_sent(unsent))

    # --- pump: start sends from the window while there is room ------------------------------

    def _room(self) -> int:
        """How many requests may start now: free slots, tokens, and the breaker's say."""
        room = min(self._cap.current - len(self._in_flight), self._bucket.available())
        allowed = self._breaker.allowance()
        return room if allowed is None else min(room, allowed)

    async def _pump(self, tg: asyncio.TaskGroup) -> None:
        while True:
            self._kick.clear()
            room = self._room()
            while room > 0 and self._ready and not self._quiescing:
                self._launch(tg, self._ready.pop())
                room -= 1
            if self._want() > 0:
                self._refill.set()
            await self._nap()

    def _launch(self, tg: asyncio.TaskGroup, rec: OutboxRecord) -> None:
        self._bucket.take(1)
        self._breaker.started(rec.id)
        started = time.monotonic()
        self._in_flight[rec.id] = started
        due = started + self._hung_after
        if self._deadline is None or due < self._deadline_at:  # (armed for a late one)
            self._arm(due)
        if self._idle_senders:
            handed = self._idle_senders.pop()
        else:
            handed = asyncio.get_running_loop().create_future()
            tg.create_task(self._sender(handed), name=f"send-{self.sink.name}-{self.stats.sent}")
        handed.set_result(rec)
        self.stats.sent += 1
        self.stats.in_flight = len(self._in_flight)

    async def _nap(self) -> None:
        """Until something changes: a lease, a finished request, a token, the next probe."""
        delay: float | None = None  # the idle poll is `_tick`'s: no timer per nap
        if self._bucket.available() == 0:
            delay = self._bucket.wait()
        if self._breaker.allowance() == 0 and self._breaker.wait() > 0:
            delay = min(self._breaker.wait(), self._cfg.idle_poll_seconds if delay is None
                        else delay)
        self._set_idle()
        if delay is None:
            await self._kick.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(delay, 0.001)):
                await self._kick.wait()

    # --- one request ------------------------------------------------------------------------

    async def _sender(self, handed: asyncio.Future[OutboxRecord]) -> None:
        """Sends what it is handed, one record at a time, until the forwarder stops. A send
        past its timeout settles as a RETRY and the sender goes on (`_deliver`)."""
        while True:
            await self._deliver(await handed)
            handed = asyncio.get_running_loop().create_future()
            self._idle_senders.append(handed)

    async def _deliver(self, rec: OutboxRecord) -> None:
        started = self._clock()
        t0 = self._in_flight.get(rec.id, time.monotonic())
        try:
            with self._send_limits.limit():  # send_timeout_seconds; a stop is still a stop
                d = await self._send_one(rec)
        except TimeoutError:  # that, or a sink's own timeout it did not turn into a Delivery
            d = Delivery(rec.id, Outcome.RETRY, reason="send timed out")
        finally:
            self._in_flight.pop(rec.id, None)
            self.stats.in_flight = len(self._in_flight)
        if d.record_id != rec.id:  # a sink bug must not settle another record
            d = Delivery(rec.id, Outcome.RETRY, reason="sink answered for another record")
        self._observe(rec, d)
        self._done.append(Done(rec, self._with_delay(rec, d), started, time.monotonic() - t0))
        self._kick.set()
        self._refill.set()

    # --- the hung limit: one timer for everything in flight -------------------------------

    def _arm(self, due: float) -> None:
        """The timer at `due` (time.monotonic: a loop's own clock may have another base)."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline_at = due
        self._deadline = asyncio.get_running_loop().call_later(
            max(due - time.monotonic(), 0.0), self._deadlines)

    def _deadlines(self) -> None:
        """The hung limit of every request in flight, on one timer at the earliest deadline,
        instead of a timer per request. Requests are in `_in_flight` oldest first, so each
        pass looks at the due ones and the next one only. A request without an answer for the
        hung limit reports the upstream hung, once per request. (The send timeout is
        `_send_limits`, the same mechanism.)"""
        self._deadline = None
        now = time.monotonic()
        for t0 in self._in_flight.values():
            if t0 <= self._hung_until:
                continue
            if t0 + self._hung_after > now:
                self._arm(t0 + self._hung_after)
                return
            self._hung_until = t0
            self._hung()
