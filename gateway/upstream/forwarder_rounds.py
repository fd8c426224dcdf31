"""The forwarder's outbox rounds: one transaction settles every request that finished since
the last round, with its attempt history, and leases the next window of due heads, marked
sent. A base of `Forwarder`, which starts the sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from buffer.attempts import Attempt, MessageFacts, worth_keeping
from buffer.errors import StorageError
from gateway.backoff import Backoff
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.story import message_facts
from gateway.upstream.forwarder_health import ForwarderHealth
from gateway.upstream.lanes import ReadyHeads
from gateway.upstream.retry_policy import BreakerState, http_status
from gateway.workflow import follow_ups

if TYPE_CHECKING:
    from dataclasses import dataclass as hot_record

    from buffer.store import OutboxStore
else:
    from gateway.model import hot_record

log = logging.getLogger("plantbridge.forwarder")


@hot_record(frozen=True, slots=True)  # one per finished request (gateway/model.py)
class Done:
    """A finished request, waiting to be settled."""

    record: OutboxRecord
    delivery: Delivery
    started: float  # wall clock
    latency: float  # seconds


class ForwarderRounds(ForwarderHealth):
    """Settle and lease in rounds; `Forwarder.__init__` sets the state up."""

    sink: Sink
    idle: asyncio.Event  # set while nothing is between send and settle
    _outbox: OutboxStore
    _wake: asyncio.Event
    _ready: ReadyHeads  # leased ahead, marked sent, waiting for a slot
    _done: list[Done]
    _unsettled: set[int]  # sent, not yet settled: never leased twice
    _since: float
    _woken: bool
    _kick: asyncio.Event
    _refill: asyncio.Event
    _quiescing: bool

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

    async def _round(self, done: Sequence[Done], want: int) -> int:
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

    def _set_idle(self) -> None:
        waiting = len(self._ready) if self._quiescing else 0  # leased ahead, never to be sent
        if not self._in_flight and not self._done and len(self._unsettled) == waiting:
            self.idle.set()

    def _storage_fault(self, exc: StorageError) -> None:
        self.stats.last_error = f"outbox: {exc}"
        log.error("%s: cannot read or settle the outbox: %s", self.sink.name, exc)

    def _history(self, done: Sequence[Done], finished: float
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
