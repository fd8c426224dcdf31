"""The OPC UA source: one endpoint, subscriptions (or polls), reconnect, health.

    async with OpcUaSourceConfig(...).build() as source:
        async for batch in source.batches():
            ...

The session loop lives here: connect (retried from the first attempt), resolve nodes by
namespace URI, create monitored items in batches, pump notifications into bounded batches, and
on any loss (probe failure, socket closed, subscription silent past its keep-alive) tear the
session down and build a new one with jittered backoff. asyncua's own auto-reconnect is off:
it would reuse namespace indexes that may have moved and recreate items in one unbounded call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Self

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from drivers.opcua.config import OpcUaSourceConfig, ReadMode
from drivers.opcua.convert import (
    OVERFLOW_BITS,
    Binding,
    NotNumeric,
    Row,
    row_of,
    sample_of,
    status_name,
)
from drivers.opcua.notifications import DataChanges, read_rows
from drivers.opcua.session import (
    Planned,
    SecurityFailure,
    close_client,
    is_security_error,
    limits,
    open_client,
    resolve,
    subscribe,
)
from gateway.backoff import Backoff
from gateway.model import Sample, SampleBatch, SourceHealth, SourceState
from gateway.timebase import gateway_now

log = logging.getLogger(__name__)


class SessionLost(Exception):
    """The session or one of its subscriptions stopped working; a new session is needed."""


def describe(exc: BaseException) -> str:
    """A failure in plain words for logs and health."""
    if isinstance(exc, UaStatusCodeError):
        text = status_name(exc.code)
        if is_security_error(exc):
            text += " (check our certificate, the server's trust list and the credentials)"
        return text
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SessionLost | SecurityFailure):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


class OpcUaSource:
    """A streaming `Source` over one OPC UA endpoint. Expected faults never escape."""

    def __init__(self, config: OpcUaSourceConfig) -> None:
        self.name = config.name
        self._cfg = config
        self._clock = config.clock(config.name)
        self._out: asyncio.Queue[SampleBatch | None] = asyncio.Queue(config.batch_queue_size)
        self._state, self._detail, self._since = SourceState.STOPPED, "", time.time()
        self._samples_total = 0
        self._rejected: collections.Counter[str] = collections.Counter()
        self._failed_items: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._ever_connected = False
        self._overflowing = False
        self._logged_rejects: set[str] = set()
        # Observable facts for tests, status pages and benchmarks.
        self.sessions_started = 0
        self.create_calls = 0
        self.failures = 0  # sessions that failed or were lost
        self.last_recovery_seconds: float | None = None

    # --- Source protocol ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._set_state(SourceState.CONNECTING, f"connecting to {self._cfg.endpoint}")
        self._task = asyncio.create_task(self._run(), name=f"opcua:{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state(SourceState.STOPPED, "")
        if self._out.full():
            self._out.get_nowait()
        self._out.put_nowait(None)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        while True:
            batch = await self._out.get()
            if batch is None:
                return
            if self._overflowing and self._out.empty():
                self._overflowing = False
                log.warning("%s: consumer caught up, no longer dropping", self.name)
                self._link_up(quiet=True)
            yield batch

    def health(self) -> SourceHealth:
        return self._clock.annotate(SourceHealth(self._state, self._detail, self._since,
                                                 self._samples_total, dict(self._rejected)))

    def failed_items(self) -> dict[str, str]:
        """`asset/signal` -> why the server refused it (status code name) in this session."""
        return dict(self._failed_items)

    # --- session loop --------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self._cfg.reconnect_initial_seconds, self._cfg.reconnect_max_seconds)
        while True:
            try:
                await self._session(backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._link_down(exc)
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, backoff: Backoff) -> None:
        cfg = self._cfg
        client = await asyncio.wait_for(open_client(cfg), cfg.request_timeout_seconds * 4)
        lost: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

        async def on_lost(exc: Exception) -> None:
            if not lost.done():
                lost.set_result(exc)

        client.connection_lost_callback = on_lost
        tasks: list[asyncio.Task[None]] = []
        try:
            self.sessions_started += 1
            resolution = await resolve(client, cfg)
            per_call, per_read = await limits(client, cfg)
            failed = dict(resolution.failed)
            subscribed: dict[float, list[Planned]] = collections.defaultdict(list)
            polled: dict[float, list[Planned]] = collections.defaultdict(list)
            for p in resolution.planned:
                if p.sampling.mode is ReadMode.SUBSCRIBE:
                    subscribed[p.sampling.publishing_interval_ms].append(p)
                else:
                    polled[p.sampling.poll_interval_ms].append(p)
            subs: list[tuple[Subscription, float]] = []
            for interval, planned in subscribed.items():
                sub, calls = await subscribe(client, cfg, interval, planned, per_call, failed)
                self.create_calls += calls
                subs.append((sub, interval))
                handles = {p.binding.handle: p.binding for p in planned}
                tasks.append(asyncio.create_task(self._pump(sub, handles),
                                                 name=f"opcua:{self.name}:pump"))
            for interval, planned in polled.items():
                tasks.append(asyncio.create_task(
                    self._poll(client, [p.binding for p in planned], interval, per_read),
                    name=f"opcua:{self.name}:poll"))
            tasks.append(asyncio.create_task(self._watchdog(subs), name=f"opcua:{self.name}:wd"))
            tasks.append(asyncio.create_task(self._wait_lost(lost), name=f"opcua:{self.name}:ka"))
            self._failed_items = failed
            self._link_up()
            backoff.reset()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            raise SessionLost("session tasks ended")
        except Exception as exc:
            self._link_down(exc)  # report before closing: a hung server makes closing slow
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await close_client(client, timeout_seconds=0.5 if lost.done() else 1.0)

    @staticmethod
    async def _wait_lost(lost: asyncio.Future[Exception]) -> None:
        exc = await lost
        raise SessionLost(f"connection lost ({describe(exc)})")

    async def _pump(self, sub: Subscription, handles: dict[int, Binding]) -> None:
        """Subscription queue -> Sample batches, never blocking the OPC UA client."""
        queue: asyncio.Queue[object] | None = getattr(sub, "_event_queue", None)
        limit = self._cfg.batch_max_samples
        while True:
            try:
                events: list[object] = [await anext(sub)]
            except StopAsyncIteration:
                raise SessionLost("subscription closed") from None
            while queue is not None and len(events) < limit and not queue.empty():
                events.append(queue.get_nowait())
            now = gateway_now()  # one receive time for the batch
            samples: list[Sample] = []
            for ev in events:
                if ev is None:
                    raise SessionLost("subscription closed")
                if type(ev) is DataChanges:
                    self._rows(ev.rows, handles, now, samples)
                elif isinstance(ev, DataChangeEvent):  # decoded by asyncua (a republish)
                    item = ev.data.monitored_item
                    self._rows((row_of(item.ClientHandle, item.Value),), handles, now, samples)
                elif isinstance(ev, StatusChangeEvent):
                    code = ev.notification.Status.value
                    if code & 0x80000000:
                        raise SessionLost(f"subscription status {status_name(code)}")
            self._emit(samples)

    def _rows(self, rows: Iterable[Row], handles: dict[int, Binding], now: float,
              samples: list[Sample]) -> None:
        """DataValues taken apart (drivers/opcua/notifications.py, convert.row_of) as samples
        of the bindings their handles name, into `samples`."""
        add, clock, find = samples.append, self._clock, handles.get
        for handle, value, status, source, server in rows:
            binding = find(handle)
            if binding is None:
                self._reject("unknown_handle", str(handle))
                continue
            try:
                add(sample_of(binding, value, status, source or server, now, clock))
            except NotNumeric as exc:
                self._reject("not_numeric", f"{binding.asset}/{binding.signal}: {exc}")
            if status & OVERFLOW_BITS == OVERFLOW_BITS:
                self._reject("server_queue_overflow", f"{binding.asset}/{binding.signal}: "
                             "raise queue_size or publish faster")

    async def _poll(self, client: Client, bindings: Sequence[Binding], interval_ms: float,
                    per_read: int) -> None:
        """Explicit polled reads for servers whose subscriptions cannot be used."""
        ids = [ua.ReadValueId(NodeId=b.node_id, AttributeId=AttributeIds.Value)
               for b in bindings]
        while True:
            started = time.monotonic()
            samples: list[Sample] = []
            for start in range(0, len(ids), per_read):
                params = ua.ReadParameters()
                params.NodesToRead = ids[start:start + per_read]
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                rows = await read_rows(client, params)
                if len(rows) != len(params.NodesToRead):
                    raise SessionLost(f"the server answered {len(rows)} values for "
                                      f"{len(params.NodesToRead)} nodes read")
                self._rows(rows, dict(enumerate(bindings[start:start + per_read])),
                           gateway_now(), samples)
            self._emit(samples)
            await asyncio.sleep(max(0.0, interval_ms / 1000 - (time.monotonic() - started)))

    async def _watchdog(self, subs: Sequence[tuple[Subscription, float]]) -> None:
        """Resubscribe (new session) when a subscription is silent past its keep-alive."""
        created = time.monotonic()

        def limit_of(sub: Subscription, interval_ms: float) -> float:
            # asyncua folds revised values the server asked for back into `parameters`
            params = sub.parameters
            interval = max(interval_ms, float(params.RequestedPublishingInterval or 0))
            keepalive = max(self._cfg.subscription_keepalive_count,
                            int(params.RequestedMaxKeepAliveCount or 0))
            return max(2.0, 1.5 * interval / 1000 * keepalive)

        limits_s = [self._cfg.subscription_watchdog_seconds or limit_of(sub, interval)
                    for sub, interval in subs]
        period = min([1.0, *(x / 4 for x in limits_s)])
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for (sub, _), limit in zip(subs, limits_s, strict=True):
                silent = now - (sub.last_publish_at or created)
                if silent > limit:
                    raise SessionLost(f"subscription silent for {silent:.1f} s (limit "
                                      f"{limit:.1f} s): resubscribing")

    def _emit(self, samples: list[Sample]) -> None:
        """Hand samples to the consumer in batches of at most `batch_max_samples` (a publish
        response's data changes or a poll cycle can hold more). When it lags a full queue's
        worth, the oldest batch goes (the newest readings matter most to rules), counted and
        logged once."""
        limit = self._cfg.batch_max_samples
        if len(samples) > limit:
            for start in range(0, len(samples), limit):
                self._emit(samples[start:start + limit])
            return
        if not samples:
            return
        self._samples_total += len(samples)
        batch = SampleBatch(samples)
        try:
            self._out.put_nowait(batch)
        except asyncio.QueueFull:
            oldest = self._out.get_nowait()
            self._out.put_nowait(batch)
            self._overflow(len(oldest.samples) if oldest is not None else 0)
            return

    # --- health and logging ----------------------------------------------------------------

    def _overflow(self, dropped: int) -> None:
        self._rejected["overflow"] += dropped
        if not self._overflowing:
            self._overflowing = True
            log.warning("%s: consumer too slow, batch queue full (%d): dropping the oldest "
                        "samples, counted in health", self.name, self._cfg.batch_queue_size)
            self._set_state(SourceState.DEGRADED, "dropping notifications: consumer too slow")

    def _reject(self, reason: str, what: str) -> None:
        self._rejected[reason] += 1
        if what not in self._logged_rejects and len(self._logged_rejects) < 1000:
            self._logged_rejects.add(what)
            log.warning("%s: rejected %s (%s)", self.name, what, reason)

    def _set_state(self, state: SourceState, detail: str) -> None:
        if state is not self._state:
            self._since = time.time()
        self._state, self._detail = state, detail

    def _link_up(self, quiet: bool = False) -> None:
        failed = self._failed_items
        if failed:
            shown = "; ".join(f"{k} {v}" for k, v in list(failed.items())[:5])
            more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
            self._set_state(SourceState.DEGRADED,
                            f"{len(failed)} of {len(self._cfg.nodes)} nodes failed: {shown}{more}")
        else:
            self._set_state(SourceState.CONNECTED, f"{len(self._cfg.nodes)} nodes")
        if quiet:
            return
        self._ever_connected = True
        if self._down_since is not None:
            self.last_recovery_seconds = time.monotonic() - self._down_since
            self._down_since = None
            log.warning("%s: OPC UA %s recovered after %.1f s", self.name, self._cfg.endpoint,
                        self.last_recovery_seconds)
        else:
            log.info("%s: connected to %s", self.name, self._cfg.endpoint)
        if failed:
            log.warning("%s: %s", self.name, self._detail)

    def _link_down(self, exc: BaseException) -> None:
        self.failures += 1
        reason = describe(exc)
        if is_security_error(exc):
            state = SourceState.FAILED
        elif self._ever_connected:
            state = SourceState.RECONNECTING
        else:
            state = SourceState.CONNECTING
        if self._down_since is None or state is not self._state:
            if self._down_since is None:
                self._down_since = time.monotonic()
            log.error("%s: OPC UA %s unavailable: %s; retrying with backoff", self.name,
                      self._cfg.endpoint, reason)
        else:
            log.debug("%s: still unavailable: %s", self.name, reason)
        self._set_state(state, reason)
