"""The relay: a durable pull consumer on the hub stream, forwarding to the EAM with our sinks.

Per event: every upstream that has not accepted it yet (the shared `receipts` bucket says which
have) gets it through its own sink; the message is acknowledged only when all have accepted it
or refused it for good. A retry is a `nak` with a delay; past `max_deliver` deliveries, or when
refused, the event goes to the dead-letter stream and is acknowledged there.

Order: inside a relay one event per gateway+asset is in flight (a lane). Across relays a clear
never overtakes its raise: a clear whose raise has no receipt in the shared bucket yet is
nak'ed with a delay. Distinct episodes of one asset may pass each other across relays; each
has its own idempotency key upstream, so that reorders but never duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from gateway.model import Outcome, Sink
from gateway.relay.config import RelayConfig
from gateway.relay.dead_letters import publish_dead_letter
from gateway.relay.events import (
    BadEvent,
    Event,
    parse_event,
    receipt_key,
    record_for,
)
from gateway.relay.fleet import FleetView
from gateway.relay.ratelimit import FleetRateLimit
from gateway.relay.storage import RelayStore
from gateway.relay.trace import TraceLog
from gateway.upstream.nats_config import connect_backbone

log = logging.getLogger("plantbridge.relay")
REJECTED_MARK = "!rejected"  # in the receipts bucket: the raise was dead-lettered


@dataclass(slots=True)
class UpstreamStats:
    accepted: int = 0
    retried: int = 0
    dead: int = 0
    last_error: str = ""


@dataclass(slots=True)
class RelayStats:
    received: int = 0
    acked: int = 0
    nacked: int = 0
    dead: int = 0
    ignored: int = 0  # telemetry and other traffic not meant for the EAM
    by_upstream: dict[str, UpstreamStats] = field(default_factory=dict)


class Relay:
    def __init__(self, cfg: RelayConfig, sinks: list[Sink]) -> None:
        self.cfg = cfg
        self.sinks = sinks
        self.stats = RelayStats(by_upstream={s.name: UpstreamStats() for s in sinks})
        self.fleet = FleetView()
        self.trace = TraceLog(cfg.consumer, cfg.relay.name)
        self.ready = asyncio.Event()
        self.consumer: dict[str, Any] = {}  # last consumer info: lag, ack pending
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self.store = RelayStore(cfg.consumer)
        self.rate_limits = {name: FleetRateLimit(lambda: self.store.limits, name,
                                                 r.rate_per_second, r.fallback)
                            for name, r in cfg.rate_limits.items()}
        self._lanes: dict[str, collections.deque[Msg]] = {}
        self._active = 0  # events taken from the stream and not yet acked or nak'ed
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.started_at = time.time()

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def in_flight(self) -> int:
        return self._active

    async def run(self) -> None:
        c = self.cfg.consumer
        self._nc = await connect_backbone(self.cfg.nats.connect_options(
            f"plantbridge-{self.cfg.relay.name}"), log)
        self._js = js = self._nc.jetstream(timeout=self.cfg.nats.request_timeout_seconds)
        self.trace.nc = self._nc
        await self.store.ensure(js, with_limits=bool(self.rate_limits))
        sub = await js.pull_subscribe(c.filter_subject, durable=c.durable, stream=c.stream,
                                      config=ConsumerConfig(
                                          ack_policy=AckPolicy.EXPLICIT, max_deliver=-1,
                                          ack_wait=c.ack_wait_seconds,
                                          max_ack_pending=c.max_ack_pending))
        beats = await self._nc.subscribe(c.heartbeat_subject)
        self.ready.set()
        log.info("relay %s: consuming %s as %r, forwarding to %s", self.cfg.relay.name,
                 c.stream, c.durable, ", ".join(s.name for s in self.sinks))
        workers = [asyncio.create_task(self._pull(sub), name="relay:pull"),
                   asyncio.create_task(self._heartbeats(beats), name="relay:heartbeats"),
                   asyncio.create_task(self._keep_queued(), name="relay:keep-queued")]
        stop = asyncio.create_task(self._stop.wait(), name="relay:stop")
        try:
            # A worker that ends is a bug: stop and let systemd restart us, never idle on.
            await asyncio.wait([stop, *workers], return_when=asyncio.FIRST_COMPLETED)
            for t in workers:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise RuntimeError(f"{t.get_name()} failed") from t.exception()
        finally:
            stop.cancel()
            for t in workers:
                t.cancel()
            await self._drain()
            await self._close()

    async def _pull(self, sub: JetStreamContext.PullSubscription) -> None:
        c = self.cfg.consumer
        failing = False
        idle = True
        while True:
            room = c.in_flight - self._active
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            # nats-py's fetch(n) returns at once what the stream holds, but when it holds
            # nothing it waits for all n (or the timeout): so when idle, wait for one event,
            # which returns the moment it arrives, and take batches while busy.
            want, wait = (1, 5.0) if idle else (min(room, c.fetch_batch), 0.2)
            try:
                msgs = await sub.fetch(want, timeout=wait)
            except nats.errors.TimeoutError:
                idle = True
                continue
            except (nats.errors.Error, OSError) as exc:
                if not failing:
                    log.warning("fetching from %s failed: %s (retrying)", c.stream, exc)
                failing = True
                await asyncio.sleep(1.0)
                continue
            if failing:
                log.info("fetching from %s works again", c.stream)
                failing = False
            idle = len(msgs) < want if want > 1 else not msgs  # one came: look for more
            for msg in msgs:
                self._dispatch(msg)

    def _dispatch(self, msg: Msg) -> None:
        """Into its lane: one event per gateway+asset in flight, in stream order."""
        self._active += 1
        self.stats.received += 1
        h = msg.headers or {}
        lane = f"{h.get('PB-Gateway', '')}/{h.get('PB-Asset', '')}"
        queue = self._lanes.get(lane)
        if queue is not None:
            queue.append(msg)
            return
        self._lanes[lane] = collections.deque([msg])
        task = asyncio.create_task(self._run_lane(lane), name=f"relay:lane:{lane}")
        self._tasks.add(task)
        task.add_done_callback(self._lane_done)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug: say it loudly
            log.error("lane %s failed (its event is redelivered after ack_wait)",
                      task.get_name(), exc_info=task.exception())

    async def _run_lane(self, lane: str) -> None:
        queue = self._lanes[lane]
        try:
            while queue:
                msg = queue[0]
                try:
                    await self._with_progress(msg)
                finally:
                    queue.popleft()
                    self._active -= 1
                    self._room.set()
        finally:
            self._lanes.pop(lane, None)

    async def _keep_queued(self) -> None:
        """Events waiting in a lane behind one of their asset are ours too: tell the server,
        or after ack_wait it would hand them to another relay while they wait here."""
        while True:
            await asyncio.sleep(self.cfg.consumer.ack_wait_seconds / 3)
            for queue in list(self._lanes.values()):
                for msg in list(queue)[1:]:
                    with contextlib.suppress(nats.errors.Error):
                        await msg.in_progress()

    async def _with_progress(self, msg: Msg) -> None:
        """Handle one message, telling the server we are still on it while a send is slow,
        so it is not handed to another relay meanwhile."""
        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(self.cfg.consumer.ack_wait_seconds / 3)
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

        ticker = asyncio.create_task(keep_alive())
        try:
            await self._handle(msg)
        finally:
            ticker.cancel()

    async def _handle(self, msg: Msg) -> None:
        md = msg.metadata
        try:
            event = parse_event(msg.subject, msg.headers, msg.data, md.sequence.stream,
                                md.num_delivered)
        except BadEvent as exc:
            if msg.subject.endswith(".heartbeat"):  # a stream that also captures heartbeats
                self.stats.ignored += 1
                await self._ack(msg, trace=False)
                return
            await self._dead(msg, "", str(exc))
            return
        self.fleet.event(event.gateway)
        if not event.forwardable:  # telemetry: too much to trace, and not ours
            self.stats.ignored += 1
            await self._ack(msg, trace=False)
            return
        await self.trace.step(event.headers, "received", seq=event.seq, subject=event.subject,
                              delivery=event.num_delivered)
        retry_after: float | None = None
        last_reason = ""
        for sink in self.sinks:
            verdict = await self._forward(event, sink)
            if verdict is None:
                continue
            last_reason = verdict[1]
            retry_after = max(retry_after or 0.0, verdict[0])
        if retry_after is None:
            await self._ack(msg)
        elif event.num_delivered >= self.cfg.consumer.max_deliver:
            await self._dead(msg, "", f"gave up after {event.num_delivered} deliveries: "
                             f"{last_reason}")
        else:
            self.stats.nacked += 1
            await self.trace.step(event.headers, "nak", delay_seconds=retry_after,
                                  reason=last_reason)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=retry_after)

    async def _forward(self, event: Event, sink: Sink) -> tuple[float, str] | None:
        """None when this upstream has the event (now or before); else (delay, why) to retry."""
        st = self.stats.by_upstream[sink.name]
        done_key = receipt_key(sink.name, event)
        try:
            done = await self.store.receipt(done_key)
            if done is not None and not (done == REJECTED_MARK and event.requeued):
                await self.trace.step(event.headers, "skipped", upstream=sink.name,
                                      receipt=done)
                return None
            upstream_ref = None
            if event.intent == "clear":
                upstream_ref = await self.store.receipt(receipt_key(sink.name, event, "raise"))
        except (nats.errors.Error, OSError) as exc:  # bucket has no leader right now
            st.last_error = f"receipts bucket unavailable: {exc}"
            return self._backoff(event), st.last_error
        if event.intent == "clear":
            if upstream_ref is None:
                why = "its raise has no receipt yet (clear waits)"
                await self.trace.step(event.headers, "waiting", upstream=sink.name, reason=why)
                return self._backoff(event), why
            if upstream_ref == REJECTED_MARK:
                upstream_ref = None  # the sink refuses a clear without a reference, in words
        limit = self.rate_limits.get(sink.name)
        if limit is not None:  # fleet-wide: this relay's turn among all relays
            await limit.acquire()
        [d] = await sink.send([record_for(event, sink.name, upstream_ref)])
        await self.trace.step(event.headers, "attempt", upstream=sink.name,
                              outcome=d.outcome.name.lower(), receipt=d.receipt or "",
                              reason=d.reason, retry_after_seconds=d.retry_after_seconds)
        if d.outcome is Outcome.ACCEPTED:
            st.accepted += 1
            await self.store.put_receipt(done_key, d.receipt or "")
            return None
        if d.outcome is Outcome.REJECTED:
            st.dead += 1
            st.last_error = d.reason
            if await self._dead_letter(event.subject, event.headers, event.data, sink.name,
                                       d.reason):
                await self.trace.step(event.headers, "dead", upstream=sink.name, reason=d.reason)
                await self.store.put_receipt(done_key, REJECTED_MARK)
                return None
            return self._backoff(event), "dead-letter stream did not store it"
        st.retried += 1
        st.last_error = d.reason
        delay = d.retry_after_seconds if d.retry_after_seconds is not None \
            else self._backoff(event)
        return delay, d.reason

    def _backoff(self, event: Event) -> float:
        c = self.cfg.consumer
        return float(min(c.retry_max_seconds,
                         c.retry_initial_seconds * 2 ** min(event.num_delivered - 1, 20)))

    async def _ack(self, msg: Msg, trace: bool = True) -> None:
        with contextlib.suppress(nats.errors.Error):  # unacked: redelivered, then skipped
            await msg.ack()
            self.stats.acked += 1
            if trace:
                await self.trace.step(msg.headers or {}, "acked")

    async def _dead(self, msg: Msg, upstream: str, reason: str) -> None:
        """Dead-letter the whole message, then ack it; if the store fails, nak it instead."""
        if await self._dead_letter(msg.subject, msg.headers or {}, msg.data, upstream, reason):
            await self.trace.step(msg.headers or {}, "dead", upstream=upstream, reason=reason)
            await self._ack(msg)
        else:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=self.cfg.consumer.retry_initial_seconds)

    async def _dead_letter(self, subject: str, original: Mapping[str, str], data: bytes,
                           upstream: str, reason: str) -> bool:
        assert self._js is not None
        self.stats.dead += 1
        return await publish_dead_letter(self._js, self.cfg.consumer, subject, original, data,
                                         upstream, reason)

    async def _heartbeats(self, sub: Any) -> None:
        async for m in sub.messages:
            self.fleet.heartbeat(m.subject, m.data)

    async def refresh(self) -> None:
        """Consumer figures for the status page: lag (not yet delivered) and ack pending."""
        if self._js is None:
            return
        c = self.cfg.consumer
        try:
            info = await self._js.consumer_info(c.stream, c.durable, timeout=2)
        except (nats.errors.Error, OSError):
            return
        self.consumer = {"lag": info.num_pending, "ack_pending": info.num_ack_pending,
                         "redelivered": info.num_redelivered, "waiting": info.num_waiting}

    async def _drain(self) -> None:
        """On stop: queued events not started yet go back at once (nak), so another relay takes
        them without waiting for ack_wait; events being sent get a moment to finish."""
        for queue in list(self._lanes.values()):
            while len(queue) > 1:
                with contextlib.suppress(nats.errors.Error):
                    await queue.pop().nak()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        for t in self._tasks:
            t.cancel()

    async def _close(self) -> None:
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

