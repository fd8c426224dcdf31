"""Northbound status: each asset's condition state, to every upstream that asked for it.

After each committed transition the asset's status (its open conditions: rule, episode,
severity, since when; the worst severity; `alarm` or `normal`) is enqueued as a STATUS-class
outbox record for each upstream with `status = true`, optionally again every
`status_heartbeat_seconds`. Status is state, not history: enqueueing drops the still-pending
older status of the same asset and sink in the same transaction
(`OutboxStore.replace_pending_status`), so an outage leaves one pending status per asset and
sink, the latest, and under the budget status is shed before any request.

Status records go to a sink of their own, `<upstream>/status` (`StatusSink`), with its own
forwarder: a backlog of status never delays a maintenance request, and the upstream adapters'
request paths stay untouched. Only the generic REST upstream has a status target so far
(`asset_status_path`); SAP PM and Maximo document none (see docs/workflow.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from buffer.errors import BufferFull, StorageError
from gateway.messages import iso_time
from gateway.model import (
    Delivery,
    EpisodeState,
    MessageClass,
    MessageKind,
    OutboxMessage,
    OutboxRecord,
    Transition,
)
from gateway.status_poll import (
    RERAISE_ID,
    RulePolicy,
    StatusPoller,
    StatusReader,
    enqueue_comment,
    enqueue_reraise,
    history_rows,
    policy_of,
    reraise_episode_id,
)

if TYPE_CHECKING:
    from buffer.operator import TrackedRecord
    from buffer.store import OutboxStore
    from gateway.daemon import Daemon
    from gateway.reraise import ReraiseClears
    from gateway.upstream.forwarder import Forwarder
    from gateway.upstream.rest import RestSink, RestSinkConfig

log = logging.getLogger("plantbridge.asset_status")

STATUS_SINK_SUFFIX = "/status"
RESTART_WINDOW_SECONDS = 24 * 3600.0  # assets re-published at start: episodes this recent
MAX_QUEUED_ASSETS = 10000


def status_sink_name(upstream: str) -> str:
    return upstream + STATUS_SINK_SUFFIX


def status_body(asset: str, site: str, episodes: Sequence[EpisodeState], now: float,
                *, heartbeat: bool = False) -> dict[str, Any]:
    """The status of one asset: its open conditions and the worst severity (1 = critical)."""
    conditions = [{"rule_id": e.rule_id, "episode_id": e.episode_id, "severity": e.severity,
                   "since": iso_time(e.raised_at)}
                  for e in sorted(episodes, key=lambda e: (e.severity, e.raised_at))]
    return {"site": site, "asset": asset, "state": "alarm" if conditions else "normal",
            "severity": conditions[0]["severity"] if conditions else None,
            "conditions": conditions, "at": iso_time(now), "heartbeat": heartbeat}


def status_message(sink: str, body: dict[str, Any], now: float) -> OutboxMessage:
    """One status record. Its key names the moment: a newer status is a new record (which
    replaces the pending older one), a retry of this one keeps its key."""
    asset = str(body["asset"])
    return OutboxMessage(key=f"status:{asset}:{sink}:{round(now * 1000)}", sink=sink,
                         asset=asset, episode_id=f"status/{asset}",
                         kind=MessageKind.STATUS_UPDATE, body=body, created_at=now,
                         message_class=MessageClass.STATUS)


@dataclass(slots=True)
class PublisherStats:
    enqueued: int = 0
    replaced: int = 0  # older pending status dropped by a newer one
    refused: int = 0  # did not fit the budget (only events and status left)
    last_error: str = ""
    by_sink: dict[str, int] = field(default_factory=dict)


class AssetStatusPublisher:
    """Turns committed transitions (a pipeline listener) into coalesced status records."""

    def __init__(self, outbox: OutboxStore, sinks: Sequence[str], site: str,
                 open_episodes: Callable[[], Sequence[EpisodeState]], wake: Callable[[], None],
                 *, heartbeat_seconds: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.sinks = list(sinks)  # status sink names: "<upstream>/status"
        self._site = site
        self._open_episodes = open_episodes
        self._wake = wake
        self._heartbeat = heartbeat_seconds
        self._clock = clock
        self._queue: collections.deque[str] = collections.deque(maxlen=MAX_QUEUED_ASSETS)
        self._event = asyncio.Event()
        self._known: set[str] = set()
        self.stats = PublisherStats()

    def on_transition(self, t: Transition) -> None:
        """Pipeline listener: called after the transition was committed."""
        self._queue.append(t.asset)
        self._known.add(t.asset)
        self._event.set()

    async def run(self, restart_assets: Iterable[str] = ()) -> None:
        """Publish until cancelled: each queued change, and all assets at each heartbeat.

        `restart_assets` are published first: the assets whose state may have changed just
        before a stop (a transition commits before its status is enqueued, so a kill between
        the two would otherwise leave the upstream with the old state until the next change).
        """
        for asset in sorted(set(restart_assets) | {e.asset for e in self._open_episodes()}):
            self._known.add(asset)
            await self.publish(asset)
        next_beat = self._clock() + self._heartbeat if self._heartbeat > 0 else None
        while True:
            timeout = None if next_beat is None else max(0.0, next_beat - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
            self._event.clear()
            while self._queue:
                await self.publish(self._queue.popleft())
            if next_beat is not None and self._clock() >= next_beat:
                assets = self._known | {e.asset for e in self._open_episodes()}
                for asset in sorted(assets):
                    await self.publish(asset, heartbeat=True)
                next_beat = self._clock() + self._heartbeat

    async def publish(self, asset: str, *, heartbeat: bool = False) -> None:
        """Enqueue the asset's status now for every status sink, replacing pending ones."""
        now = self._clock()
        episodes = [e for e in self._open_episodes() if e.asset == asset]
        body = status_body(asset, self._site, episodes, now, heartbeat=heartbeat)
        for sink in self.sinks:
            try:
                self.stats.replaced += await self.outbox.replace_pending_status(
                    status_message(sink, body, now))
            except BufferFull as exc:  # status is the first thing to give way
                self.stats.refused += 1
                self.stats.last_error = str(exc)
                continue
            except StorageError as exc:
                self.stats.last_error = str(exc)
                log.warning("status of %s not enqueued: %s", asset, exc)
                continue
            self.stats.enqueued += 1
            self.stats.by_sink[sink] = self.stats.by_sink.get(sink, 0) + 1
        self._wake()

    def snapshot(self) -> dict[str, Any]:
        return {"sinks": list(self.sinks), "enqueued": self.stats.enqueued,
                "replaced": self.stats.replaced, "refused": self.stats.refused,
                "last_error": self.stats.last_error}


class StatusSink:
    """The `<upstream>/status` sink of a REST upstream: POSTs each status record to its
    `asset_status_path` with the record's key as Idempotency-Key (the REST sink's own
    transport, retry classification and error words, pointed at the status path)."""

    def __init__(self, cfg: RestSinkConfig) -> None:
        from gateway.upstream.rest import ReconcileMode

        self.name = status_sink_name(cfg.name)
        inner_cfg = cfg.model_copy(update={"name": self.name,
                                           "request_path": cfg.asset_status_path,
                                           "reconcile": ReconcileMode.OFF})
        self._inner: RestSink = inner_cfg.build()

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        # The REST sink POSTs a request-kind record to `request_path` (here: the status path)
        # and keeps the answer's id; a status needs no receipt, so none is kept.
        as_posts = [replace(r, message=replace(r.message, kind=MessageKind.MAINTENANCE_REQUEST))
                    for r in batch]
        got = await self._inner.send(as_posts)
        return [replace(d, receipt=None) for d in got]

    async def check(self) -> None:
        await self._inner.check()

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- the daemon's part: build, start, observe --------------------------------------------


class StatusBothWays:
    """Everything of status both ways in one running daemon: the publisher and the status
    forwarders (northbound), a poller per upstream that can be read back (southbound), and
    the cached history for the page. Built and started by `start` from the daemon's lines."""

    def __init__(self) -> None:
        self.publisher: AssetStatusPublisher | None = None
        self.forwarders: list[Forwarder] = []
        self.pollers: list[StatusPoller] = []
        self.history: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Task[None]] = []  # the daemon cancels them with its core
        self.reraise_clears: ReraiseClears | None = None

    @classmethod
    def start(cls, daemon: Daemon, tg: asyncio.TaskGroup) -> StatusBothWays:
        from gateway.reconcile import request_rebuilder
        from gateway.reraise import OpenReraise, ReraiseClears
        from gateway.timebase import gateway_now
        from gateway.upstream.forwarder import Forwarder
        from gateway.upstream.rest import RestSinkConfig

        me = cls()
        cfg, outbox, pipeline = daemon.cfg, daemon.outbox, daemon.pipeline
        assert outbox is not None and pipeline is not None
        wakes: list[asyncio.Event] = []
        for up in cfg.upstreams:
            if isinstance(up, RestSinkConfig) and up.status:
                wake = asyncio.Event()
                fwd = Forwarder(StatusSink(up), outbox, cfg.forwarding, wake)
                wakes.append(wake)
                me.forwarders.append(fwd)
                me.tasks.append(tg.create_task(_forward(fwd), name=f"forward:{fwd.sink.name}"))
        def wake_all() -> None:
            for w in wakes:
                w.set()

        if me.forwarders:
            beats = [getattr(u, "status_heartbeat_seconds", 0.0) for u in cfg.upstreams
                     if getattr(u, "status", False)]
            me.publisher = AssetStatusPublisher(
                outbox, [f.sink.name for f in me.forwarders], cfg.gateway.site,
                pipeline.engine.open_episodes, wake_all,
                heartbeat_seconds=min((b for b in beats if b > 0), default=0.0),
                clock=gateway_now)
            pipeline.listeners.append(me.publisher.on_transition)
            me.tasks.append(tg.create_task(me._publish(me.publisher), name="asset-status"))
        rules = {r.rule_id: r.spec for r in daemon.loaded.rules.rules}
        rebuild = request_rebuilder(daemon.loaded.rules, cfg.gateway.site)

        def policy_for(rule_id: str) -> RulePolicy:
            return policy_of(rules.get(rule_id))

        clears = ReraiseClears(outbox, cfg.gateway.site, daemon._wake_forwarders,
                               clock=gateway_now)
        pipeline.message_hooks.append(clears.hook)
        pipeline.listeners.append(clears.on_transition)
        me.tasks.append(tg.create_task(clears.run(), name="reraise-clears"))
        me.reraise_clears = clears

        async def reraise(rec: TrackedRecord, now: float) -> None:
            severity = next((e.severity for e in pipeline.engine.open_episodes()
                             if e.episode_id == rec.episode_id), None)
            if severity is None and not RERAISE_ID.search(rec.episode_id):
                return  # the condition cleared during the cooldown: nothing to raise again
            if await enqueue_reraise(outbox, rebuild, rec, severity or 3, now):
                daemon._wake_forwarders()
            clears.opened(rec.episode_id, OpenReraise(
                reraise_episode_id(rec.episode_id), rec.rule_id, rec.asset, severity or 3,
                frozenset({rec.sink})))

        async def comment(rec: TrackedRecord, raw: str, seen_at: float) -> None:
            if await enqueue_comment(outbox, rec, raw, seen_at, cfg.gateway.site):
                daemon._wake_forwarders()

        for sink in daemon.sinks:
            # a field of the REST and SAP PM models (Maximo's may not carry it yet): by name
            seconds = next((float(getattr(u, "status_poll_seconds", 300.0))
                            for u in cfg.upstreams if u.name == sink.name), 0.0)
            if seconds > 0 and isinstance(sink, StatusReader):
                poller = StatusPoller(sink, outbox, seconds, policy_for=policy_for,
                                      reraise=reraise, comment=comment,
                                      submit=pipeline.submit,
                                      clock=gateway_now)
                me.pollers.append(poller)
                me.tasks.append(tg.create_task(me._poll(poller, lambda: daemon.sinks),
                                               name=f"status-poll:{sink.name}"))
        return me

    async def _publish(self, publisher: AssetStatusPublisher) -> None:
        """Run the publisher, starting with the assets of the last day's episodes."""
        outbox = publisher.outbox
        recent = await outbox.episodes_with_requests(time.time() - RESTART_WINDOW_SECONDS)
        await publisher.run({r.asset for r in recent})

    async def _poll(self, poller: StatusPoller, sinks: Callable[[], Sequence[object]]) -> None:
        """Run one poller, refreshing the page's history after each round. Each round reads
        through the upstream's current sink: a reload replaces (and closes) the old one. The
        first round is one interval after the start, not at it: a boot asks nothing of the
        upstreams beyond what delivery needs (the rules' open_work state is durable)."""
        with contextlib.suppress(StorageError):  # the page shows what is known at once
            self.history = history_rows(await poller.outbox.upstream_status(limit=HISTORY_ROWS))
        while True:
            poller.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poller.wake.wait(), poller.interval_seconds)
            current = next((s for s in sinks() if getattr(s, "name", None) == poller.reader.name),
                           None)
            if isinstance(current, StatusReader):
                poller.reader = current
            try:
                if current is not None:  # removed by a reload: poll nothing until it is back
                    await poller.poll_once()
                self.history = history_rows(await poller.outbox.upstream_status(
                    limit=HISTORY_ROWS))
            except StorageError as exc:
                poller.last_error = f"outbox: {exc}"

    def snapshot(self) -> dict[str, Any]:
        """The `/status` key `upstream_status`: what the page shows of status both ways."""
        return {"northbound": None if self.publisher is None else self.publisher.snapshot(),
                "polling": [p.snapshot() for p in self.pollers],
                "records": self.history}


HISTORY_ROWS = 500


async def _forward(fwd: Forwarder) -> None:
    """Run a status forwarder; its sink (and HTTP session) closes with it."""
    try:
        await fwd.run()
    finally:
        await fwd.sink.aclose()
