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
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import Field

from buffer.attempts import Attempt, MessageFacts, worth_keeping
from buffer.errors import StorageError
from gateway.backoff import Backoff
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.settings import StrictModel
from gateway.story import DeliveryStory, message_facts
from gateway.upstream.lanes import ReadyHeads
from gateway.upstream.limits import (
    DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS,
    UNDECLARED_LIMITS,
    InFlightCap,
    TokenBucket,
    UpstreamLimits,
)
from gateway.upstream.retry_policy import (
    OVERLOAD_STATUSES,
    Breaker,
    BreakerState,
    answered,
    http_status,
    overloaded,
)
from gateway.workflow import follow_ups

if TYPE_CHECKING:
    from buffer.store import OutboxStore

__all__ = ["BreakerState", "Forwarder", "ForwarderStats", "ForwardingConfig", "http_status",
           "retry_delay"]

log = logging.getLogger("plantbridge.forwarder")


class ForwardingConfig(StrictModel):
    batch_size: int = Field(default=50, ge=1)  # most records leased at once
    idle_poll_seconds: float = 1.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0  # a record's own backoff cap (the link's is probe_max)
    retry_after_max_seconds: float = 3600.0
    breaker_failures: int = 3  # consecutive failed requests before the breaker opens
    # while the breaker is open, one probe request at most this far apart
    probe_max_seconds: float = Field(default=10.0, gt=0)
    send_timeout_seconds: float = 60.0  # per request, beyond the sink's own HTTP timeouts
    shutdown_grace_seconds: float = 5.0  # on stop, time for in-flight deliveries to finish
    # a request without an answer for this long marks the upstream hung (logged once, shown,
    # breaker open); None: the upstream's first-byte timeout
    hung_after_seconds: float | None = Field(default=None, gt=0)
    # a record still failing this long after it was created is a problem on the status page
    # and /readyz (it keeps retrying, and holds back nothing but its own episode)
    stuck_after_seconds: float = Field(default=600.0, gt=0)
    probe_interval_seconds: float = Field(default=300.0, gt=0)  # reachability + credentials
    # the daemon's identity check (gateway/identity_probe.py); 0: only at start and reload
    identity_check_interval_seconds: float = Field(default=6 * 3600.0, ge=0)


@dataclass(slots=True)
class ForwarderStats:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retried: int = 0
    breaker: BreakerState = BreakerState.CLOSED
    last_error: str = ""
    last_success_at: float | None = None
    last_failure_at: float | None = None
    by_status: dict[str, int] = field(default_factory=dict)
    hung: bool = False  # a request has had no answer for the hung limit (until one answers)
    in_flight: int = 0
    in_flight_cap: int = 0  # the adaptive cap's current value (max_in_flight when fixed)

    @property
    def failing(self) -> bool:
        """The latest attempt failed (whatever the breaker says)."""
        return self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at)


def retry_delay(attempts: int, cfg: ForwardingConfig, server_hint: float | None,
                jitter: Callable[[], float]) -> float:
    """Exponential backoff with jitter per record; a server's Retry-After wins (capped)."""
    if server_hint is not None:
        return max(0.0, min(server_hint, cfg.retry_after_max_seconds))
    cap = min(cfg.retry_max_seconds, cfg.retry_initial_seconds * 2.0 ** min(attempts, 30))
    return cap / 2 + jitter() * cap / 2


@dataclass(frozen=True, slots=True)
class _Done:
    """A finished request, waiting to be settled."""

    record: OutboxRecord
    delivery: Delivery
    started: float  # wall clock
    latency: float  # seconds


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


class Forwarder:
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
        self._in_flight: dict[int, float] = {}  # record id -> monotonic start
        self._unsettled: set[int] = set()  # sent, not yet settled: never leased twice
        # what this forwarder marks sent after this instant the lease skips in SQL (marks up to
        # it are a previous life's sends, to be sent again; `_unsettled` still guards ours)
        self._since = clock()
        self._done: list[_Done] = []
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
            # records leased ahead but never sent: no unknown outcome for a sink to wait on
            unsent = [r.id for r in self._ready.take_all()]
            with contextlib.suppress(StorageError):
                await asyncio.shield(self._outbox.unmark_sent(unsent))

    # --- rounds: settle what finished and keep a window of due heads leased ahead -----------

    def _want(self) -> int:
        """How many records to lease now. Two windows ahead while the breaker is closed (so a
        freed slot never waits for the database); while it is open, only the next probe."""
        if self._breaker.state is not BreakerState.CLOSED:
            return 1 if not self._ready and self._breaker.allowance() == 1 else 0
        # a refill waits its turn behind settles on the one database connection
        target = min(2 * self._cap.current, self._cfg.batch_size)
        want = target - len(self._ready) if len(self._ready) <= target // 2 else 0
        if self._woken:  # a commit: whatever is most urgent now must get into the window
            want = max(want, min(8, self._cfg.batch_size, target + 8 - len(self._ready)))
        return want

    async def _rounds(self) -> None:
        """One outbox transaction per round: settle every request that finished since the
        last round (with its attempt history) and lease, marked sent, what the window lacks.
        Rounds run back to back while there is work, so a round's size follows the rate: one
        commit (one fsync) per round, not one per settle plus one per lease."""
        storage = Backoff(0.5, 10.0)
        while True:
            self._refill.clear()
            done, self._done = self._done, []
            want = self._want()
            if done or want > 0:
                woken, self._woken = self._woken, False
                try:
                    got = await self._round(done, want)
                    storage.reset()
                except StorageError as exc:
                    # Disk full or I/O error: keep the outcomes and settle them when it works
                    # again (until then the records stay pending and are not leased twice).
                    self._storage_fault(exc)
                    self._done[:0] = done
                    self._woken = self._woken or woken
                    await asyncio.sleep(storage.next_delay())
                    continue
                if done or (want > 0 and got == want):
                    continue  # more may have finished, or be due, meanwhile
            if self._breaker.state is BreakerState.CLOSED:  # the idle poll: `_tick`
                await self._refill.wait()
                continue
            delay = min(self._cfg.idle_poll_seconds, max(self._breaker.wait(), 0.001))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._refill.wait()

    async def _round(self, done: Sequence[_Done], want: int) -> int:
        """Settle `done` and lease up to `want` due heads not already under way into the
        window; returns how many were leased. Leased records are marked sent in the same
        transaction, durable before the send: after a crash the sink knows their outcome
        upstream is unknown."""
        now = self._clock()
        deliveries = [x.delivery for x in done]
        settled = {x.record.id for x in done}
        exclude = self._unsettled - settled if settled else self._unsettled
        # workflow steps an accepted record makes due (parts chain): in the same transaction
        follow = follow_ups(self.sink, [x.record for x in done], deliveries) if done else ()
        attempts, facts = self._history(done, now)
        if follow:
            await self._outbox.settle_with_follow_ups(deliveries, now, follow)
            await self._record_attempts(attempts, facts)
            records = await self._outbox.lease_for_send(self.sink.name, want, now,
                                                        exclude=exclude, since=self._since)
        else:  # outcomes, their history and the next lease in one transaction
            records = await self._outbox.settle_and_lease(
                deliveries, now, self.sink.name, want, attempts=attempts, facts=facts,
                exclude=exclude, since=self._since)
        if done:
            self._unsettled.difference_update(settled)
            # one story call per group, as one round was: a record refused among others
            # accepted is that record's trouble, not the link's (latencies alike: the mean)
            self._story.settled([(x.record, x.delivery) for x in done],
                                sum(x.latency for x in done) / len(done), now)
            self._account(deliveries, now)
        if records:
            self._unsettled.update(r.id for r in records)
            self.idle.clear()
            self._ready.push(records)
            self._kick.set()
        self._set_idle()
        return len(records)

    async def _tick(self) -> None:
        """The idle poll, once for everyone: every `idle_poll_seconds` the pump and the rounds
        look again (records whose retry fell due, anything no event announced). One timer per
        poll, where a timeout on every wait cost a timer per request at thousands a second."""
        while True:
            await asyncio.sleep(self._cfg.idle_poll_seconds)
            self._kick.set()
            self._refill.set()

    async def _watch_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._woken = True
            self._refill.set()

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
        self._in_flight[rec.id] = time.monotonic()
        tg.create_task(self._deliver(rec), name=f"send-{self.sink.name}-{rec.id}")
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

    async def _deliver(self, rec: OutboxRecord) -> None:
        started = self._clock()
        t0 = self._in_flight.get(rec.id, time.monotonic())
        watchdog = asyncio.get_running_loop().call_later(self._hung_after, self._hung)
        try:
            async with asyncio.timeout(self._cfg.send_timeout_seconds):
                d = await self._send_one(rec)
        except TimeoutError:
            d = Delivery(rec.id, Outcome.RETRY, reason="send timed out")
        finally:
            watchdog.cancel()
            self._in_flight.pop(rec.id, None)
            self.stats.in_flight = len(self._in_flight)
        if d.record_id != rec.id:  # a sink bug must not settle another record
            d = Delivery(rec.id, Outcome.RETRY, reason="sink answered for another record")
        self._observe(rec, d)
        self._done.append(_Done(rec, self._with_delay(rec, d), started, time.monotonic() - t0))
        self._kick.set()
        self._refill.set()

    def _observe(self, rec: OutboxRecord, d: Delivery) -> None:
        """What one answer says about the link: breaker, bucket, in-flight cap, hung flag."""
        if answered(d) and self.stats.hung:
            self.stats.hung = False
            self._story.answering(self._clock())
        if d.outcome is Outcome.RETRY:
            self._breaker.failed(rec.id)
            if overloaded(d):
                self._cap.overloaded()
            if d.retry_after_seconds is not None and http_status(d.reason) in OVERLOAD_STATUSES:
                # the upstream asked everyone to wait, not just this record
                self._bucket.pause(min(d.retry_after_seconds, self._cfg.retry_after_max_seconds))
        else:
            self._breaker.succeeded()
            self._cap.succeeded()
        self.stats.breaker = self._breaker.state
        self.stats.in_flight_cap = self._cap.current

    def _with_delay(self, rec: OutboxRecord, d: Delivery) -> Delivery:
        """When a RETRY is due again: the server's word, else a short wait while the breaker
        is open (the probe decides when the link is back), else the record's own backoff."""
        if d.outcome is not Outcome.RETRY:
            return d
        if d.retry_after_seconds is None and self._breaker.state is not BreakerState.CLOSED:
            delay = self._cfg.retry_initial_seconds
        else:
            delay = retry_delay(rec.attempts, self._cfg, d.retry_after_seconds, self._rng.random)
        return replace(d, retry_after_seconds=delay)

    def _hung(self) -> None:
        """The oldest request in flight has had no answer for the hung limit."""
        if not self._in_flight:
            return
        self.stats.hung = True
        self._breaker.trip()
        self.stats.breaker = self._breaker.state
        self._story.hung(len(self._in_flight), self._hung_after, self._clock())

    def _set_idle(self) -> None:
        waiting = len(self._ready) if self._quiescing else 0  # leased ahead, never to be sent
        if not self._in_flight and not self._done and len(self._unsettled) == waiting:
            self.idle.set()

    def _storage_fault(self, exc: StorageError) -> None:
        self.stats.last_error = f"outbox: {exc}"
        log.error("%s: cannot read or settle the outbox: %s", self.sink.name, exc)

    def _history(self, done: Sequence[_Done], finished: float
                 ) -> tuple[list[Attempt], list[MessageFacts]]:
        """Attempt history for `trace`: the attempts worth keeping, and the message's facts on
        its first attempt and its final one (before its body is dropped), not on every retry:
        the first stored stay, later ones would only be ignored."""
        attempts = []
        facts = []
        name = self.sink.name
        for x in done:
            rec, d = x.record, x.delivery
            number = rec.attempts + 1
            final = d.outcome is not Outcome.RETRY
            if worth_keeping(number, final):
                attempts.append(Attempt(
                    rec.id, rec.message.key, name, rec.message.episode_id, x.started, finished,
                    d.outcome.value, http_status(d.reason), round(x.latency * 1000, 1),
                    d.reason, d.receipt, number))
            if number == 1 or final:
                facts.append(MessageFacts(rec.id, rec.message.episode_id, finished,
                                          message_facts(rec.message.body)))
        return attempts, facts

    async def _record_attempts(self, attempts: Sequence[Attempt],
                               facts: Sequence[MessageFacts]) -> None:
        """Attempt history in its own small transaction after `settle_with_follow_ups`. Losing
        it to a storage fault loses no message, so it is logged, never a reason to stop."""
        try:
            await self._outbox.record_attempts(attempts, facts)
        except StorageError as exc:
            log.warning("%s: attempt history not written: %s", self.sink.name, exc)

    def _account(self, deliveries: Sequence[Delivery], now: float) -> None:
        st = self.stats
        for d in deliveries:
            if d.outcome is Outcome.ACCEPTED:
                st.accepted += 1
            elif d.outcome is Outcome.REJECTED:
                st.rejected += 1
            else:
                st.retried += 1
        if any(d.outcome is not Outcome.RETRY for d in deliveries):
            st.last_success_at = now
        retry = [d for d in deliveries if d.outcome is Outcome.RETRY]
        if retry:
            st.last_failure_at = now
            st.last_error = retry[0].reason
        st.breaker = self._breaker.state
