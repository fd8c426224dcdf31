"""Drives one sink from the outbox: lease, send, settle. Retries, circuit breaker, dead letters.

A record leaves the outbox only after the sink classified it ACCEPTED (or REJECTED for good). A
cancelled send leaves the record pending: it is sent again under the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from buffer.errors import StorageError
from gateway.backoff import Backoff
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.settings import StrictModel

if TYPE_CHECKING:
    from buffer.store import OutboxStore

log = logging.getLogger("plantbridge.forwarder")


class ForwardingConfig(StrictModel):
    batch_size: int = 50
    idle_poll_seconds: float = 1.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    retry_after_max_seconds: float = 3600.0
    breaker_failures: int = 3  # consecutive all-failed rounds before the breaker opens
    send_timeout_seconds: float = 60.0
    shutdown_grace_seconds: float = 5.0  # on stop, time for in-flight deliveries to finish


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # delivering
    OPEN = "open"  # upstream failing: waiting before the next try
    HALF_OPEN = "half_open"  # trying one round after a wait


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


class Forwarder:
    def __init__(self, sink: Sink, outbox: OutboxStore, cfg: ForwardingConfig,
                 wake: asyncio.Event, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self._outbox = outbox
        self._cfg = cfg
        self._wake = wake
        self._clock = clock
        self._breaker = Backoff(cfg.retry_initial_seconds, cfg.retry_max_seconds)
        self._failed_rounds = 0
        self.stats = ForwarderStats()
        self.idle = asyncio.Event()  # clear while a batch is between send and settle
        self.idle.set()

    async def run(self) -> None:
        """Deliver until cancelled. A storage fault pauses delivery; it never ends it."""
        rng = random.Random()
        storage = Backoff(0.5, 10.0)
        while True:
            try:
                await self._round(rng)
                storage.reset()
            except StorageError as exc:
                # Disk full or I/O error while leasing or settling: whatever was sent but not
                # settled stays pending and is sent again under the same idempotency key.
                self.stats.last_error = f"outbox: {exc}"
                log.error("%s: cannot read or settle the outbox: %s", self.sink.name, exc)
                await asyncio.sleep(storage.next_delay())

    async def _round(self, rng: random.Random) -> None:
        now = self._clock()
        records = await self._outbox.lease(self.sink.name, self._cfg.batch_size, now)
        if not records:
            await self._idle()
            return
        self.idle.clear()
        try:
            await self._outbox.mark_sent([r.id for r in records], self._clock())
            deliveries = await self._send(records)
            settled = [
                d if d.outcome is not Outcome.RETRY else replace(
                    d, retry_after_seconds=retry_delay(
                        rec.attempts, self._cfg, d.retry_after_seconds, rng.random))
                for rec, d in zip(records, deliveries, strict=True)
            ]
            await self._outbox.settle(settled, self._clock())
        finally:
            self.idle.set()
        await self._account(settled)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._cfg.idle_poll_seconds)

    async def _send(self, records: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        self.stats.sent += len(records)
        try:
            async with asyncio.timeout(self._cfg.send_timeout_seconds):
                got = await self.sink.send(records)
        except TimeoutError:
            return [Delivery(r.id, Outcome.RETRY, reason="send timed out") for r in records]
        by_id = {d.record_id: d for d in got}
        # A sink must classify every record; anything it forgot is retried, never dropped.
        return [by_id.get(r.id) or Delivery(r.id, Outcome.RETRY, reason="sink gave no outcome")
                for r in records]

    async def _account(self, deliveries: Sequence[Delivery]) -> None:
        st = self.stats
        now = self._clock()
        ok = [d for d in deliveries if d.outcome is Outcome.ACCEPTED]
        dead = [d for d in deliveries if d.outcome is Outcome.REJECTED]
        retry = [d for d in deliveries if d.outcome is Outcome.RETRY]
        st.accepted += len(ok)
        st.rejected += len(dead)
        st.retried += len(retry)
        for d in dead:
            log.error("%s: record %d dead-lettered: %s", self.sink.name, d.record_id, d.reason)
        if ok or dead:
            st.last_success_at = now
        if not retry:
            if st.breaker is not BreakerState.CLOSED:
                log.warning("%s: upstream recovered, delivering again", self.sink.name)
            st.breaker = BreakerState.CLOSED
            self._failed_rounds = 0
            self._breaker.reset()
            return
        st.last_failure_at = now
        st.last_error = retry[0].reason
        if ok or dead:
            return  # partly working: per-record backoff is enough
        self._failed_rounds += 1
        if self._failed_rounds >= self._cfg.breaker_failures:
            if st.breaker is BreakerState.CLOSED:
                log.warning("%s: upstream failing (%s); backing off", self.sink.name,
                            st.last_error)
            st.breaker = BreakerState.OPEN
            await asyncio.sleep(self._breaker.next_delay())
            st.breaker = BreakerState.HALF_OPEN
