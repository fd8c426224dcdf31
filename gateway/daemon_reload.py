"""SIGHUP: re-read config and rules into a running daemon without a gap.

A bad file changes nothing (the status says why); changed sources and upstreams restart, new
ones start, removed ones stop; the rule engine swaps its rules keeping the state of every
instance whose definition did not change. Parts that cannot change live ([gateway], [buffer],
[http], [forwarding], [alarms]) keep their running values and are named as "restart needed".
Kept apart from gateway/daemon.py, which owns the start and the stop; `Daemon.reload` runs
`reload_config` one at a time, in the order the signals came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway import config as config_mod
from gateway.daemon_status import rule_counts
from gateway.messages import iso_time
from gateway.timebase import TimeSettings

if TYPE_CHECKING:
    from gateway.daemon import Daemon

log = logging.getLogger("plantbridge")

# Sections read once at start: a change is kept for the next restart, and said.
RESTART_ONLY = ("gateway", "buffer", "http", "forwarding", "alarms")


async def reload_config(d: Daemon) -> bool:
    """Re-read the daemon's config file and apply it. False (and nothing changed) when the
    file is refused; the reason is in `d.reload_state["error"]` and the log."""
    assert d.pipeline is not None
    d.notifier.reloading()
    now = time.time()
    try:
        new = await asyncio.to_thread(config_mod.load, d.loaded.path)
    except config_mod.ConfigError as exc:
        d.reload_state = {**d.reload_state, "error": str(exc), "at": iso_time(now)}
        log.error("reload refused, keeping the running config: %s", exc)
        d.notifier.ready(d.status.one_line())
        return False
    restart_needed = [part for part in RESTART_ONLY
                      if getattr(new.config, part) != getattr(d.cfg, part)]
    if restart_needed:
        log.warning("changes to [%s] take effect at the next restart",
                    "], [".join(restart_needed))
    changes = await apply_components(d, new.config)
    async with d.pipeline.lock:
        transitions = d.pipeline.engine.replace(new.rules, now)
    await d.pipeline.apply(transitions)
    if d.page_feed is not None:  # trends follow the new rules' signals
        d.page_feed.follow(new.rules)
    kept = {p: getattr(d.cfg, p) for p in restart_needed}
    d.cfg = new.config.model_copy(update=kept)
    d.loaded = config_mod.LoadedConfig(d.loaded.path, d.cfg, new.rules, new.rule_files,
                                       new.registry)
    if d.probes is not None:
        d.probes.poke()  # a fixed token or URL is confirmed (or not) at once
    if d.identity is not None:
        d.identity.reloaded()  # asks again when upstreams, registry or rules changed
    d.reload_state = {"at": iso_time(now), "error": "", **rule_counts(d.pipeline.engine),
                      "changes": changes, "restart_needed": restart_needed}
    log.info("reloaded: %d rules, %d episodes closed by removal%s",
             d.reload_state["rules"], len(transitions),
             "; " + ", ".join(changes) if changes else "")
    d.notifier.ready(d.status.one_line())
    return True


async def apply_components(d: Daemon, new: config_mod.PlantBridgeConfig) -> list[str]:
    """Restart what changed, start what is new, stop what is gone. Returns what it did."""
    done: list[str] = []
    assert d.pipeline is not None

    def why(old: config_mod.UpstreamConfig | config_mod.SourceConfig,
            new: config_mod.UpstreamConfig | config_mod.SourceConfig | None) -> str:
        # A Secret compares by what it said when loaded (Secret.fingerprint), so a fixed
        # token file alone makes its component unequal: it restarts and reads the fix.
        same = new is not None and new.model_dump() == old.model_dump()
        return " (its secret changed)" if same else ""

    old_up = {u.name: u for u in d.cfg.upstreams}
    new_up = {u.name: u for u in new.upstreams}
    for name, old in old_up.items():
        if new_up.get(name) != old:
            await d.stop_upstream(name)
            done.append(f"upstream {name} stopped{why(old, new_up.get(name))}")
    for name, up in new_up.items():
        if old_up.get(name) != up:
            d.start_upstream(up)
            done.append(f"upstream {name} started")
    d.pipeline.gate.set_policies(duplicate_policies(new))
    # New messages go to the new set of sinks; records queued for a removed sink stay in
    # the outbox until it comes back (visible as pending on the status page).
    d.pipeline.set_sinks(list(new_up))
    old_src = {s.name: s for s in d.cfg.sources}
    new_src = {s.name: s for s in new.sources}
    for name, old_s in old_src.items():
        if new_src.get(name) != old_s:
            await d.stop_source(name)
            done.append(f"source {name} stopped{why(old_s, new_src.get(name))}")
    for name, src in new_src.items():
        if old_src.get(name) != src:
            d.start_source(src)
            done.append(f"source {name} started")
    return done


def duplicate_policies(cfg: config_mod.PlantBridgeConfig) -> dict[str, Any]:
    """Per source: whether a sample not newer than the last evaluated one is skipped."""
    return {s.name: s.duplicates for s in cfg.sources if isinstance(s, TimeSettings)}
