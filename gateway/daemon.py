"""The daemon: builds every component from config, supervises them, stops them in order.

Start order: outbox, sinks and forwarders, rules, pipeline, HTTP, then sources. Stop order is the
reverse at the front: sources first, then the pipeline drains, then forwarders get a grace
period to finish what is in flight. Expected faults live inside components; an exception that
escapes a task is a bug: the TaskGroup stops everything and systemd restarts us.
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
from gateway import page_alarms, story
from gateway.asset_status import StatusBothWays
from gateway.dedup import SampleGate
from gateway.flood import AlarmComponents
from gateway.http import age_words, build_app
from gateway.identity_probe import IdentityProbe, Inputs, identity_status
from gateway.identity_report import cache_path_for
from gateway.messages import iso_time
from gateway.model import Sink, Source, Transition
from gateway.page_feed import PageFeed
from gateway.pipeline import Pipeline
from gateway.probes import Probes
from gateway.sdnotify import SystemdNotifier
from gateway.timebase import TimeSettings, gateway_now
from gateway.upstream.forwarder import Forwarder
from gateway.valid_range import build_source
from rules import RuleEngine

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
                            max_instances_per_rule=cfg.rules.max_instances_per_rule)
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
        gate = SampleGate(_duplicate_policies(cfg))
        gate.load(await outbox.load_marks())
        if episodes or loaded_states:
            log.info("restored %d open episodes and the state of %d rule instances",
                     len(episodes), loaded_states)
        self.reload_state |= _rule_counts(engine)
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
                    self._start_upstream(up)
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
                    self._start_source(src)
                self._install_signals()
                # What start-up built (config, rules, routes, imported modules) lives as long
                # as the process: out of the collector's reach, the cyclic GC no longer walks
                # it on every full collection (8 % of a core in the Modbus benchmark).
                gc.freeze()
                self.ready.set()
                self.notifier.ready(self._one_line())
                log.info("running: %d sources, %d upstreams, %s", len(self.sources),
                         len(self.sinks), config_mod.describe_rules(self.loaded.rules))
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

    def _start_source(self, cfg: config_mod.SourceConfig) -> None:
        assert self._tg is not None and self.pipeline is not None
        src = build_source(cfg)  # with its valid ranges (gateway/valid_range.py)
        self.sources[cfg.name] = (cfg.type, src)
        self._source_tasks[cfg.name] = self._tg.create_task(self.pipeline.feed(src),
                                                            name=f"source:{cfg.name}")

    async def _stop_source(self, name: str) -> None:
        await _cancel([self._source_tasks.pop(name)])
        self.sources.pop(name, None)

    def _start_upstream(self, cfg: config_mod.UpstreamConfig) -> None:
        assert self._tg is not None and self.outbox is not None
        sink = cfg.build()
        if cfg.type == "nats":  # the fleet view shows what the heartbeat says
            # imported here: only a config with a backbone upstream loads the NATS client
            from gateway.upstream.nats import NatsSink

            assert isinstance(sink, NatsSink)
            sink.heartbeat_facts = self.heartbeat_facts
        self._wakes[cfg.name] = asyncio.Event()
        fwd = Forwarder(sink, self.outbox, self.cfg.forwarding, self._wakes[cfg.name])
        self.sinks.append(sink)
        self.forwarders.append(fwd)
        self._forward_tasks[cfg.name] = self._tg.create_task(fwd.run(), name=f"forward:{cfg.name}")

    def _wake_forwarders(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _stop_upstream(self, name: str) -> None:
        await _cancel([self._forward_tasks.pop(name)])
        self._wakes.pop(name, None)
        for sink in [s for s in self.sinks if s.name == name]:
            with contextlib.suppress(Exception):
                await sink.aclose()
        self.sinks = [s for s in self.sinks if s.name != name]
        self.forwarders = [f for f in self.forwarders if f.sink.name != name]

    async def _apply_components(self, new: config_mod.PlantBridgeConfig) -> list[str]:
        """Restart what changed, start what is new, stop what is gone. Returns what it did."""
        done: list[str] = []
        assert self.pipeline is not None

        def why(old: config_mod.UpstreamConfig | config_mod.SourceConfig,
                new: config_mod.UpstreamConfig | config_mod.SourceConfig | None) -> str:
            # A Secret compares by what it said when loaded (Secret.fingerprint), so a fixed
            # token file alone makes its component unequal: it restarts and reads the fix.
            same = new is not None and new.model_dump() == old.model_dump()
            return " (its secret changed)" if same else ""

        old_up = {u.name: u for u in self.cfg.upstreams}
        new_up = {u.name: u for u in new.upstreams}
        for name, old in old_up.items():
            if new_up.get(name) != old:
                await self._stop_upstream(name)
                done.append(f"upstream {name} stopped{why(old, new_up.get(name))}")
        for name, up in new_up.items():
            if old_up.get(name) != up:
                self._start_upstream(up)
                done.append(f"upstream {name} started")
        self.pipeline.gate.set_policies(_duplicate_policies(new))
        # New messages go to the new set of sinks; records queued for a removed sink stay in
        # the outbox until it comes back (visible as pending on the status page).
        self.pipeline.set_sinks(list(new_up))
        old_src = {s.name: s for s in self.cfg.sources}
        new_src = {s.name: s for s in new.sources}
        for name, old_s in old_src.items():
            if new_src.get(name) != old_s:
                await self._stop_source(name)
                done.append(f"source {name} stopped{why(old_s, new_src.get(name))}")
        for name, src in new_src.items():
            if old_src.get(name) != src:
                self._start_source(src)
                done.append(f"source {name} started")
        return done

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
            return await self._reload()

    async def _reload(self) -> bool:
        assert self.pipeline is not None
        self.notifier.reloading()
        now = time.time()
        try:
            new = await asyncio.to_thread(config_mod.load, self.loaded.path)
        except config_mod.ConfigError as exc:
            self.reload_state = {**self.reload_state, "error": str(exc), "at": iso_time(now)}
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self._one_line())
            return False
        restart_needed = [part for part in ("gateway", "buffer", "http", "forwarding", "alarms")
                          if getattr(new.config, part) != getattr(self.cfg, part)]
        if restart_needed:
            log.warning("changes to [%s] take effect at the next restart",
                        "], [".join(restart_needed))
        changes = await self._apply_components(new.config)
        async with self.pipeline.lock:
            transitions = self.pipeline.engine.replace(new.rules, now)
        await self.pipeline.apply(transitions)
        if self.page_feed is not None:  # trends follow the new rules' signals
            self.page_feed.follow(new.rules)
        kept = {p: getattr(self.cfg, p) for p in restart_needed}
        self.cfg = new.config.model_copy(update=kept)
        self.loaded = config_mod.LoadedConfig(self.loaded.path, self.cfg, new.rules,
                                              new.rule_files, new.registry)
        if self.probes is not None:
            self.probes.poke()  # a fixed token or URL is confirmed (or not) at once
        if self.identity is not None:
            self.identity.reloaded()  # asks again when upstreams, registry or rules changed
        self.reload_state = {"at": iso_time(now), "error": "",
                             **_rule_counts(self.pipeline.engine),
                             "changes": changes, "restart_needed": restart_needed}
        log.info("reloaded: %d rules, %d episodes closed by removal%s",
                 self.reload_state["rules"], len(transitions),
                 "; " + ", ".join(changes) if changes else "")
        self.notifier.ready(self._one_line())
        return True

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
                self.notifier.update_status(self._one_line())  # sent only when it changed
            await asyncio.sleep(interval)

    def heartbeat_facts(self, max_listed: int = 20) -> dict[str, Any]:
        """For the backbone heartbeat: open episodes (count, and the first few) and the
        outbox backlog per upstream, from the figures `refresh` keeps (no query here)."""
        p, o = self.pipeline, self.outbox_stats
        open_eps = [] if p is None else p.engine.open_episodes()
        return {"open_episodes": len(open_eps),
                "open": [{"episode_id": e.episode_id, "asset": e.asset, "rule_id": e.rule_id,
                          "severity": e.severity, "raised_at": e.raised_at}
                         for e in open_eps[:max_listed]],
                # every upstream, 0 included: "nothing waiting" is an answer too
                "backlog": {f.sink.name: (o.get("pending") or {}).get(f.sink.name, 0)
                            for f in self.forwarders},
                "dead": dict(o.get("dead") or {}),
                "oldest_pending_age_seconds": o.get("oldest_pending_age_seconds")}

    # What the status page shows beyond the outbox figures; read by `refresh`.
    probes: Probes | None = None
    identity: IdentityProbe | None = None
    status_rows: StatusRows | None = None
    dead_list: list[DeadLetter] = []
    status_both_ways: StatusBothWays | None = None  # gateway/asset_status.py

    async def refresh(self) -> None:
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

    def problems(self) -> list[str]:
        out = list(self.notices)
        out.extend(self._integrity_problems())
        for kind, src in self.sources.values():
            h = src.health()
            if h.state not in ("connected",):
                out.append(f"source {src.name} ({kind}) is {h.state}: {h.detail}")
        if self.probes is not None:
            out += self.probes.problems()
        if self.identity is not None:  # requests for these assets would be refused
            out += self.identity.problems()
        o = self.outbox_stats
        rows = self.status_rows
        now = gateway_now()
        for f in self.forwarders:
            waiting = (o.get("pending") or {}).get(f.sink.name, 0)
            if f.stats.hung:
                out.append(f"upstream {f.sink.name} is not answering (connection open, no "
                           f"response); {waiting} waiting")
        out += self.delays()
        for u in rows.urgent if rows else []:
            how = "dead-lettered" if u.state == "dead" else "still not delivered"
            why = f": {u.last_error}" if u.last_error else ""
            out.append(f"critical request (severity {u.severity}) for {u.asset} to upstream "
                       f"{u.sink} {how} after {age_words(now - u.created_at)}{why}")
        for sink, n in (o.get("dead") or {}).items():
            if n:
                last = [d for d in self.dead_list if d.sink == sink][-1:]
                why = f"; latest ({last[0].asset}): {last[0].reason}" if last else ""
                out.append(f"upstream {sink} has {n} dead-lettered record(s){why} (fix the "
                           "cause, then: plantbridge dead-letters --requeue all)")
        if o.get("full"):
            out.append("outbox budget reached: telemetry-derived records are being shed")
        if self.pipeline is not None and self.pipeline.stats.evaluation_errors:
            st = self.pipeline.stats
            out.append(f"{st.evaluation_errors} sample(s) skipped by a rule error (a bug; see "
                       f"the log): {st.last_evaluation_error}")
        if self.pipeline is not None and self.pipeline.stats.storage_problem:
            out.append(f"cannot write the outbox: {self.pipeline.stats.storage_problem}")
        if self.reload_state["error"]:
            out.append("last reload failed (still running the previous config)")
        if self.reload_state.get("restart_needed"):
            out.append("restart needed for changes to ["
                       + "], [".join(self.reload_state["restart_needed"]) + "]")
        return out

    def _integrity_problems(self) -> list[str]:
        """What threatens 'never zero, never two': a damaged outbox (until acknowledged), a
        record that keeps failing, pattern rules refusing assets, clocks beyond their limit."""
        out = [f"{n} (acknowledge with: plantbridge outbox acknowledge)"
               for n in self.outbox_notices]
        out += self._stuck(requests=True)
        for kind, src in self.sources.values():
            note = src.health().clock_note
            if note:
                out.append(f"source {src.name} ({kind}): {note}")
        if self.pipeline is not None:
            for rule_id, n in sorted(self.pipeline.engine.refused_instances().items()):
                out.append(f"rule {rule_id} refused {n} asset(s): it has its "
                           f"[rules] max_instances_per_rule of "
                           f"{self.cfg.rules.max_instances_per_rule}")
        return out

    def _stuck(self, *, requests: bool) -> list[str]:
        """Records failing past `forwarding.stuck_after_seconds`: a maintenance request that
        cannot get through is a problem; a late status update only a delay."""
        out = []
        for sink, by_class in (self.outbox_stats.get("stuck_by_class") or {}).items():
            rec = by_class.get("request" if requests else "other")
            if rec is None:
                continue
            n, what = rec["count"], "request(s)" if requests else "record(s)"
            out.append(f"upstream {sink}: {n} {what} failing for over "
                       f"{self.cfg.forwarding.stuck_after_seconds:.0f} s, oldest {rec['id']} "
                       f"({rec['asset']}, {rec['attempts']} attempts, "
                       f"{rec['age_seconds']:.0f} s): {rec['last_error']}")
        return out

    def delays(self) -> list[str]:
        """Upstreams that fail to deliver. Shown with the problems, but on their own they leave
        /readyz green: a late low-priority update pages nobody. A critical request late past
        `http.critical_pending_seconds` is a problem of its own (`status_rows.urgent`)."""
        o, out = self.outbox_stats, self._stuck(requests=False)
        for f in self.forwarders:
            waiting = (o.get("pending") or {}).get(f.sink.name, 0)
            if not f.stats.hung and f.stats.failing and waiting:
                age = (o.get("oldest_pending_age_by_sink") or {}).get(f.sink.name, 0.0)
                out.append(f"upstream {f.sink.name} is not delivering ({waiting} waiting, "
                           f"oldest {age_words(age)}): {f.stats.last_error}")
        return out

    def snapshot(self) -> dict[str, Any]:
        p = self.pipeline
        o, rows = self.outbox_stats, self.status_rows
        sources = []
        for kind, src in self.sources.values():
            h = src.health()
            sources.append({"name": src.name, "type": kind, "state": str(h.state),
                            "detail": h.detail, "samples": h.samples_total,
                            "rejected": dict(h.rejected),
                            "clock_skew_seconds": h.clock_skew_seconds,
                            "clock_note": h.clock_note, "counted": dict(h.counted),
                            "duplicates_skipped": 0 if p is None else
                            p.gate.skipped.get(src.name, 0)})
        probed = self.probes.results if self.probes is not None else {}
        # A last error is shown while it is current: once the upstream answers again, it goes.
        upstreams = [{"name": f.sink.name,
                      "breaker": "hung" if f.stats.hung else str(f.stats.breaker),
                      "failing": f.stats.failing, "hung": f.stats.hung,
                      "accepted": f.stats.accepted, "rejected": f.stats.rejected,
                      "retried": f.stats.retried,
                      "last_error": f.stats.last_error if f.stats.failing or f.stats.hung
                      else "",
                      "probe": probed[f.sink.name].as_dict() if f.sink.name in probed else None,
                      "pending": (o.get("pending") or {}).get(f.sink.name, 0),
                      "dead": (o.get("dead") or {}).get(f.sink.name, 0),
                      "oldest_pending_age_seconds":
                          (o.get("oldest_pending_age_by_sink") or {}).get(f.sink.name)}
                     for f in self.forwarders]
        raised = {x["episode_id"]: x for x in self.recent if x["kind"] == "raised"}
        episodes = []
        alarms = self.alarms.snapshot()
        held = {h["episode_id"] for h in alarms["shelving"].get("hidden_episodes", [])}
        for e in [] if p is None else p.engine.open_episodes():
            said: dict[str, Any] = dict(rows.facts.get(e.episode_id, {})) if rows else {}
            said |= raised.get(e.episode_id, {})
            episodes.append({
                "rule_id": e.rule_id, "asset": e.asset, "episode_id": e.episode_id,
                "severity": e.severity, "raised_at": iso_time(e.raised_at),
                "value": said.get("value"), "reason": said.get("reason", ""),
                "receipts": {sink: r for (sink, ep), r in (rows.receipts if rows else {}).items()
                             if ep == e.episode_id},
                # the request of each sink that has no receipt yet: pending | dead
                "undelivered": {sink: st for (sink, ep), st in
                                (rows.undelivered if rows else {}).items()
                                if ep == e.episode_id},
                # raised while shelved: no request is sent until the shelf ends
                "held_back": "shelved" if e.episode_id in held else None})
        dead = [{"id": d.id, "sink": d.sink, "asset": d.asset, "kind": str(d.kind),
                 "reason": d.reason, "failed_at": iso_time(d.failed_at),
                 "attempts": d.attempts} for d in self.dead_list]
        snap = {
            "site": self.cfg.gateway.site,
            "uptime_seconds": time.time() - self.started_at,
            "problems": self.problems(),
            "delays": self.delays(),  # among the problems; alone they leave /readyz green
            "sources": sources,
            "upstreams": upstreams,
            "outbox": self.outbox_stats,
            "pipeline": asdict(p.stats) if p else {},
            "open_episodes": episodes,
            "dead_letters": dead,
            "recent_transitions": list(self.recent),
            "reload": self.reload_state | ({} if p is None else _rule_counts(p.engine)),
            "refused_instances": {} if p is None else p.engine.refused_instances(),
            "outbox_notices": list(self.outbox_notices),
            "alarms": alarms,
            "upstream_status": {} if self.status_both_ways is None
            else self.status_both_ways.snapshot(),  # gateway/asset_status.py
            "identity": identity_status(None if self.identity is None  # identity_probe.py
                                        else self.identity.report),
        }
        snap |= page_alarms.page_keys(alarms)  # shelved assets, flood banner
        # --- the asset page (gateway/page_feed.py): cards built from the above ---
        return snap if self.page_feed is None else snap | self.page_feed.snapshot_keys(snap)

    page_feed: PageFeed | None = None  # the asset page (gateway/page_feed.py)

    def _one_line(self) -> str:
        probs = self.problems()
        return "ok" if not probs else f"{len(probs)} problem(s): {probs[0]}"


def _duplicate_policies(cfg: config_mod.PlantBridgeConfig) -> dict[str, Any]:
    """Per source: whether a sample not newer than the last evaluated one is skipped."""
    return {s.name: s.duplicates for s in cfg.sources if isinstance(s, TimeSettings)}


def _rule_counts(engine: RuleEngine) -> dict[str, int]:
    """Rules as written, and instances built so far (pattern rules build per asset on data)."""
    return {"rules": len(engine.rule_ids()), "instances": len(engine.instances()),
            "pattern_rules": sum(r.pattern is not None for r in engine.rules.rules)}


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t

