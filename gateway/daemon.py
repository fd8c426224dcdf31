"""The daemon: builds every component from config, supervises them, stops them in order.

Start order: outbox, sinks and forwarders, rules, pipeline, HTTP, then sources. Stop order is the
reverse at the front: sources first, then the pipeline drains, then forwarders get a grace
period to finish what is in flight. Expected faults live inside components; an exception that
escapes a task is a bug: the TaskGroup stops everything and systemd restarts us.

What the daemon says of itself (problems, `/status`, the heartbeat) is in gateway/daemon_status.py;
the SIGHUP reload is in gateway/daemon_reload.py. Both work on the daemon they are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from aiohttp import web

from buffer.records import DeadLetter, StatusRows
from buffer.store import OutboxStore
from gateway import config as config_mod
from gateway import story
from gateway.asset_status import StatusBothWays
from gateway.daemon_reload import duplicate_policies, reload_config
from gateway.daemon_status import DaemonStatus, describe_running_rules, rule_counts
from gateway.dedup import SampleGate
from gateway.flood import AlarmComponents
from gateway.http import build_app
from gateway.identity_probe import IdentityProbe, Inputs
from gateway.identity_report import cache_path_for
from gateway.messages import iso_time
from gateway.model import Sink, Source, Transition
from gateway.page_feed import PageFeed
from gateway.pipeline import Pipeline
from gateway.probes import Probes
from gateway.sdnotify import SystemdNotifier
from gateway.timebase import gateway_now
from gateway.upstream.forwarder import Forwarder
from gateway.valid_range import build_source
from rules import RuleEngine
from rules import native as rules_native

log = logging.getLogger("plantbridge")


class Daemon:
    def __init__(self, loaded: config_mod.LoadedConfig) -> None:
        self.loaded = loaded
        self.cfg = loaded.config
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.http_port: int | None = None
        self.notifier = SystemdNotifier()
        self.sources: dict[str, tuple[str, Source]] = {}  # name -> (type, running source)
        self.sinks: list[Sink] = []
        self.forwarders: list[Forwarder] = []
        self._tg: asyncio.TaskGroup | None = None
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._forward_tasks: dict[str, asyncio.Task[None]] = {}
        self.outbox: OutboxStore | None = None
        self.pipeline: Pipeline | None = None
        self.alarms = AlarmComponents(self.cfg.alarms, self.cfg.gateway.site)  # see _run_components
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.reload_state: dict[str, Any] = {"at": iso_time(self.started_at), "error": "",
                                             "rules": 0, "instances": 0}
        self.outbox_stats: dict[str, Any] = {}
        self.outbox_notices: list[str] = []  # shown until `plantbridge outbox acknowledge`
        self.notices: list[str] = []
        self._wakes: dict[str, asyncio.Event] = {}  # one per forwarder: new records to send
        # Reloads run one at a time, in the order the signals came: a SIGHUP during a reload
        # runs after it, never beside it (two at once could start two forwarders on one sink).
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[bool]] = set()
        self.status = DaemonStatus(self)  # the observation side: gateway/daemon_status.py

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.cfg
        self.loaded.config.outbox_path().parent.mkdir(parents=True, exist_ok=True)
        # One daemon per state dir: a second `run` fails here, naming the PID holding it.
        self.outbox = await cfg.buffer.build(cfg.gateway.state_dir, lock=True)
        try:
            if self.outbox.salvage is not None:
                log.error("outbox file was damaged: %s", self.outbox.salvage.summary(),
                          extra=story.extra(path=str(self.outbox.salvage.moved_to)))
            if self.outbox.wal_damage is not None:
                log.error("outbox write-ahead log was damaged: %s",
                          self.outbox.wal_damage.detail)
            await self._run_components(self.outbox)
        finally:
            for sink in self.sinks:
                with contextlib.suppress(Exception):
                    await sink.aclose()
            await self.outbox.close()
            self.notifier.stopping()
            log.info("stopped")

    async def _run_components(self, outbox: OutboxStore) -> None:
        cfg = self.cfg
        engine = RuleEngine(self.loaded.rules,
                            max_instances_per_rule=cfg.rules.max_instances_per_rule,
                            journal_samples=cfg.rules.state_journal_samples)
        # Rule state first (delays, mutes, windows), then the open episodes, which the outbox
        # decides; timers keep their deadlines, stale rules get their start-up grace.
        # --- alarm management (shelving, roll-up, flood metrics): its own stored state first
        stored = await outbox.load_rule_states()
        by_config, registry = cfg.alarms.line_of(), self.loaded.registry
        self.alarms = AlarmComponents(  # lines from [alarms.lines], else the asset registry
            cfg.alarms, cfg.gateway.site,
            line_of=lambda asset: by_config(asset) or registry.line_of(asset))
        hidden, floods = self.alarms.restore(stored)
        self.alarms.shelving.set_shelves(await outbox.shelves())  # before the first sample
        if hidden or floods:
            log.info("restored %d shelved episodes and the flood state of %d lines", hidden,
                     floods)
        # --- end alarm management
        loaded_states = engine.restore_states(AlarmComponents.engine_states(stored))
        episodes = await outbox.open_episodes()
        engine.restore(episodes)
        engine.resume(gateway_now(), cfg.rules.stale_start_grace_seconds)
        gate = SampleGate(duplicate_policies(cfg))
        gate.load(await outbox.load_marks())
        gate.load_journaled(engine.journal_marks)  # samples committed since the checkpoint
        if episodes or loaded_states or engine.replayed:
            log.info("restored %d open episodes and the state of %d rule instances; "
                     "%d journaled samples evaluated again", len(episodes), loaded_states,
                     engine.replayed)
        self.reload_state |= rule_counts(engine)
        self.pipeline = Pipeline(engine, outbox, [u.name for u in cfg.upstreams],
                                 cfg.gateway.site, self._wake_forwarders,
                                 tick_seconds=cfg.rules.tick_seconds, clock=gateway_now,
                                 gate=gate)
        self.pipeline.listeners.append(self._remember)
        self.pipeline.listeners.append(story.log_transition)
        self.alarms.attach(self.pipeline)  # alarm management: hooks and listener
        # --- the asset page (gateway/page_feed.py): trend ring per signal, raise/clear marks ---
        self.page_feed = PageFeed.attach(self, cfg.http.trend_points)
        # Deadlines that passed while we were down fire now, before any source is read: the
        # broker's backlog may hold the sample that ended the condition, and evaluated first it
        # would cancel a delay that had already run out.
        await self.pipeline.apply(engine.tick(gateway_now()))

        runner = await self._start_http()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for up in cfg.upstreams:  # sinks first, so nothing waits on a missing sink
                    self.start_upstream(up)
                self.probes = Probes(lambda: self.sinks, cfg.forwarding.probe_interval_seconds)
                # identities and domains looked up upstream, after READY (identity_probe.py)
                self.identity = IdentityProbe(
                    lambda: Inputs(self.cfg, self.loaded.registry, self.loaded.rules), self.ready,
                    interval_seconds=cfg.forwarding.identity_check_interval_seconds,
                    cache_path=cache_path_for(cfg.outbox_path()))
                core = [tg.create_task(self.pipeline.run(), name="pipeline"),
                        tg.create_task(self.probes.run(), name="probes"),
                        tg.create_task(self.identity.run(), name="identity-probe"),
                        tg.create_task(self.pipeline.ticker(), name="rule-ticker"),
                        tg.create_task(self._housekeeping(), name="housekeeping"),
                        tg.create_task(self.alarms.run(outbox), name="alarms")]
                # --- status both ways (gateway/asset_status.py): northbound asset status,
                # southbound polling of the records we created; stopped with the core ---
                self.status_both_ways = StatusBothWays.start(self, tg)
                core += self.status_both_ways.tasks
                for src in cfg.sources:
                    self.start_source(src)
                self._install_signals()
                # What start-up built (config, rules, routes, imported modules) lives as long
                # as the process: out of the collector's reach, the cyclic GC no longer walks
                # it on every full collection (8 % of a core in the Modbus benchmark).
                gc.freeze()
                self.ready.set()
                self.notifier.ready(self.status.one_line())
                # the running engine's counts: pattern rules have built the instances whose
                # state was restored, which the rule files alone cannot say
                log.info("running: %d sources, %d upstreams, %s; rule engine %s",
                         len(self.sources), len(self.sinks), describe_running_rules(engine),
                         rules_native.describe())
                await self.stop_event.wait()
                self.notifier.stopping()
                log.info("stopping: sources first")
                await _cancel(list(self._reload_tasks))
                await _cancel(list(self._source_tasks.values()))
                await self._drain_pipeline()
                await _cancel(core)
                await self._drain_forwarders()
                await _cancel(list(self._forward_tasks.values()))
        finally:
            self._tg = None
            self._remove_signals()
            if runner is not None:
                await runner.cleanup()

    # Start and stop one component; the reload (gateway/daemon_reload.py) calls these too.

    def start_source(self, cfg: config_mod.SourceConfig) -> None:
        assert self._tg is not None and self.pipeline is not None
        src = build_source(cfg)  # with its valid ranges (gateway/valid_range.py)
        self.sources[cfg.name] = (cfg.type, src)
        self._source_tasks[cfg.name] = self._tg.create_task(self.pipeline.feed(src),
                                                            name=f"source:{cfg.name}")

    async def stop_source(self, name: str) -> None:
        await _cancel([self._source_tasks.pop(name)])
        self.sources.pop(name, None)

    def start_upstream(self, cfg: config_mod.UpstreamConfig) -> None:
        assert self._tg is not None and self.outbox is not None
        sink = cfg.build()
        if cfg.type == "nats":  # the fleet view shows what the heartbeat says
            # imported here: only a config with a backbone upstream loads the NATS client
            from gateway.upstream.nats import NatsSink

            assert isinstance(sink, NatsSink)
            sink.heartbeat_facts = self.status.heartbeat_facts
        self._wakes[cfg.name] = asyncio.Event()
        fwd = Forwarder(sink, self.outbox, self.cfg.forwarding, self._wakes[cfg.name])
        self.sinks.append(sink)
        self.forwarders.append(fwd)
        self._forward_tasks[cfg.name] = self._tg.create_task(fwd.run(), name=f"forward:{cfg.name}")

    def _wake_forwarders(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def stop_upstream(self, name: str) -> None:
        await _cancel([self._forward_tasks.pop(name)])
        self._wakes.pop(name, None)
        for sink in [s for s in self.sinks if s.name == name]:
            with contextlib.suppress(Exception):
                await sink.aclose()
        self.sinks = [s for s in self.sinks if s.name != name]
        self.forwarders = [f for f in self.forwarders if f.sink.name != name]

    async def _drain_pipeline(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.drain(5.0)

    async def _drain_forwarders(self) -> None:
        """Let batches already sent be settled, within the grace period; the rest stays queued
        (a cut send is sent again at the next start, under the same idempotency key)."""
        for f in self.forwarders:
            f.quiesce()  # start nothing new; let what is in flight finish and settle
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(f.idle.wait() for f in self.forwarders)),
                                   self.cfg.forwarding.shutdown_grace_seconds)

    def request_stop(self) -> None:
        self.stop_event.set()

    # --- signals and reload ----------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _reload_on_signal(self) -> None:
        """SIGHUP: queue a reload; the task is kept so it is neither lost nor left unawaited."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> bool:
        """Re-read config and rules, one reload at a time. A bad file changes nothing; the
        status says why."""
        async with self._reload_lock:
            return await reload_config(self)  # gateway/daemon_reload.py

    # --- observation ---------------------------------------------------------------------------

    def _remember(self, t: Transition) -> None:
        self.recent.append({"time": iso_time(t.ts), "kind": str(t.kind), "asset": t.asset,
                            "rule_id": t.rule_id, "episode_id": t.episode_id,
                            "reason": t.reason, "value": t.value})

    async def _housekeeping(self) -> None:
        """Refresh outbox figures for status and metrics; feed the systemd watchdog; keep
        systemd's STATUS= (what `systemctl status` shows) in step with the problem list."""
        assert self.outbox is not None
        interval = min(1.0, self.notifier.watchdog_interval_seconds or 1.0)
        while True:
            await self.refresh()
            self.notifier.watchdog()
            if self.notifier.enabled:
                self.notifier.update_status(self.status.one_line())  # sent only when it changed
            await asyncio.sleep(interval)

    # What the status page shows beyond the outbox figures; read by `refresh`.
    probes: Probes | None = None
    identity: IdentityProbe | None = None
    status_rows: StatusRows | None = None
    dead_list: list[DeadLetter] = []
    status_both_ways: StatusBothWays | None = None  # gateway/asset_status.py
    page_feed: PageFeed | None = None  # the asset page (gateway/page_feed.py)

    async def refresh(self) -> None:
        """Read the figures that live in SQLite (the status server calls this before each
        answer, `_housekeeping` once a second); `self.status` words them, without I/O."""
        if self.outbox is not None:
            now = gateway_now()  # the clock that stamped the records
            stats = await self.outbox.stats(
                now, stuck_after_seconds=self.cfg.forwarding.stuck_after_seconds)
            self.outbox_stats = asdict(stats)
            self.outbox_notices = [n.message for n in await self.outbox.notices()]
            self.status_rows = await self.outbox.status_rows(
                now, self.cfg.http.critical_pending_seconds)
            any_dead = any((self.outbox_stats.get("dead") or {}).values())
            self.dead_list = await self.outbox.dead_letters(limit=20) if any_dead else []
        if self.page_feed is not None:  # the cards' spare-parts lines (gateway/page_feed.py)
            await self.page_feed.refresh()

    async def _start_http(self) -> web.AppRunner | None:
        h = self.cfg.http
        if not h.enabled:
            return None
        token = h.token.reveal() if h.token is not None else None  # `check` names a bad one
        feed = self.page_feed  # the asset page (gateway/page_feed.py)
        runner = web.AppRunner(build_app(self.snapshot, self.refresh, token,
                                         series_of=feed.series if feed else None,
                                         episode_page=feed.episode_page if feed else None),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, h.listen_host, h.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else h.port
        log.info("status page on http://%s:%s/", h.listen_host, self.http_port)
        return runner

    # The observation side lives in gateway/daemon_status.py; these names are what the status
    # server, the tests and the tools call.

    def problems(self) -> list[str]:
        return self.status.problems()

    def delays(self) -> list[str]:
        return self.status.delays()

    def snapshot(self) -> dict[str, Any]:
        return self.status.snapshot()


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t

