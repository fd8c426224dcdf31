"""Drives one sink from the outbox: lease, send, settle. Retries, circuit breaker, dead letters.

A record leaves the outbox only after the sink classified it ACCEPTED (or REJECTED for good). A
cancelled send leaves the record pending: it is sent again under the same idempotency key.

Every settled send is also written to the attempt history (`plantbridge trace`) and told as a
story in the log (gateway/story.py): accepts, retry bursts, dead letters, a failing or hung link.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import Field

from buffer.attempts import Attempt, MessageFacts, worth_keeping
from buffer.errors import StorageError
from gateway.backoff import Backoff
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.settings import StrictModel
from gateway.story import DeliveryStory, message_facts
from gateway.workflow import follow_ups

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
    # a send without an answer for this long is logged once as a hung upstream (and shown)
    hung_after_seconds: float = Field(default=10.0, gt=0)
    # a record still failing this long after it was created is a problem on the status page
    # and /readyz (it keeps retrying, and holds back nothing but its own episode)
    stuck_after_seconds: float = Field(default=600.0, gt=0)
    probe_interval_seconds: float = Field(default=300.0, gt=0)  # reachability + credentials


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
    hung: bool = False  # a send has had no answer for hung_after_seconds (until one answers)

    @property
    def failing(self) -> bool:
        """The latest attempt failed (whatever the breaker says)."""
        return self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at)


_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})\b")


def http_status(reason: str) -> int | None:
    """The HTTP status a sink's reason names ("HTTP 503: ..."), if any."""
    found = _HTTP_STATUS.search(reason)
    return int(found.group(1)) if found else None


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
        self._story = DeliveryStory(sink.name)
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
            started = self._clock()
            await self._outbox.mark_sent([r.id for r in records], started)
            t0 = time.monotonic()
            deliveries = await self._send(records)
            latency = time.monotonic() - t0
            settled = [
                d if d.outcome is not Outcome.RETRY else replace(
                    d, retry_after_seconds=retry_delay(
                        rec.attempts, self._cfg, d.retry_after_seconds, rng.random))
                for rec, d in zip(records, deliveries, strict=True)
            ]
            finished = self._clock()
            # workflow steps an accepted record makes due (parts chain): same transaction
            follow = follow_ups(self.sink, records, settled)
            if follow:
                await self._outbox.settle_with_follow_ups(settled, finished, follow)
            else:
                await self._outbox.settle(settled, finished)
            await self._record_attempts(records, settled, started, finished, latency)
        finally:
            self.idle.set()
        self._story.settled(list(zip(records, settled, strict=True)), latency, finished)
        await self._account(settled)

    async def _record_attempts(self, records: Sequence[OutboxRecord],
                               deliveries: Sequence[Delivery], started: float, finished: float,
                               latency: float) -> None:
        """Attempt history for `trace`, in its own small transaction after `settle`. Losing it
        to a storage fault loses no message, so it is logged, never a reason to stop."""
        attempts = [
            Attempt(rec.id, rec.message.key, self.sink.name, rec.message.episode_id, started,
                    finished, d.outcome.value, http_status(d.reason), round(latency * 1000, 1),
                    d.reason, d.receipt, rec.attempts + 1)
            for rec, d in zip(records, deliveries, strict=True)
            if worth_keeping(rec.attempts + 1, d.outcome is not Outcome.RETRY)]
        facts = [MessageFacts(rec.id, rec.message.episode_id, finished,
                              message_facts(rec.message.body))
                 for rec in records]  # insert-or-ignore: the first attempt's facts stay
        try:
            await self._outbox.record_attempts(attempts, facts)
        except StorageError as exc:
            log.warning("%s: attempt history not written: %s", self.sink.name, exc)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._cfg.idle_poll_seconds)

    async def _send(self, records: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        self.stats.sent += len(records)
        limit = self._cfg.hung_after_seconds
        t0 = time.monotonic()
        watchdog = asyncio.get_running_loop().call_later(limit, self._hung, len(records), limit)
        try:
            async with asyncio.timeout(self._cfg.send_timeout_seconds):
                got = await self.sink.send(records)
        except TimeoutError:
            return [Delivery(r.id, Outcome.RETRY, reason="send timed out") for r in records]
        finally:
            watchdog.cancel()
        if time.monotonic() - t0 < limit or any(d.outcome is not Outcome.RETRY for d in got):
            # an answer in time (or any real outcome): whatever hung is answering again
            self.stats.hung = False
            self._story.answering(self._clock())
        by_id = {d.record_id: d for d in got}
        # A sink must classify every record; anything it forgot is retried, never dropped.
        return [by_id.get(r.id) or Delivery(r.id, Outcome.RETRY, reason="sink gave no outcome")
                for r in records]

    def _hung(self, in_flight: int, waited: float) -> None:
        self.stats.hung = True
        self._story.hung(in_flight, waited, self._clock())

    async def _account(self, deliveries: Sequence[Delivery]) -> None:
        st = self.stats
        now = self._clock()
        ok = [d for d in deliveries if d.outcome is Outcome.ACCEPTED]
        dead = [d for d in deliveries if d.outcome is Outcome.REJECTED]
        retry = [d for d in deliveries if d.outcome is Outcome.RETRY]
        st.accepted += len(ok)
        st.rejected += len(dead)
        st.retried += len(retry)
        if ok or dead:
            st.last_success_at = now
        if not retry:  # the story logs failing and recovery, once each
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
            st.breaker = BreakerState.OPEN
            await asyncio.sleep(self._breaker.next_delay())
            st.breaker = BreakerState.HALF_OPEN
