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
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

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
    new_up = {u.name: u for u in new.upstreams}
    await _swap("upstream", {u.name: u for u in d.cfg.upstreams}, new_up, d.stop_upstream,
                d.start_upstream, done)  # sinks first: nothing waits on a missing sink
    d.pipeline.gate.set_policies(duplicate_policies(new))
    # New messages go to the new set of sinks; records queued for a removed sink stay in
    # the outbox until it comes back (visible as pending on the status page).
    d.pipeline.set_sinks(list(new_up))
    await _swap("source", {s.name: s for s in d.cfg.sources},
                {s.name: s for s in new.sources}, d.stop_source, d.start_source, done)
    return done


async def _swap(kind: str, old: Mapping[str, BaseModel], new: Mapping[str, BaseModel],
                stop: Callable[[str], Awaitable[None]], start: Callable[[Any], None],
                done: list[str]) -> None:
    """Stop the components of one kind that changed or are gone, then start the changed and
    the new ones; say each in `done`."""
    for name, before in old.items():
        after = new.get(name)
        if after != before:
            await stop(name)
            # A Secret compares by what it said when loaded (Secret.fingerprint), so a fixed
            # token file alone makes its component unequal: it restarts and reads the fix.
            same = after is not None and after.model_dump() == before.model_dump()
            done.append(f"{kind} {name} stopped{' (its secret changed)' if same else ''}")
    for name, component in new.items():
        if old.get(name) != component:
            start(component)
            done.append(f"{kind} {name} started")


def duplicate_policies(cfg: config_mod.PlantBridgeConfig) -> dict[str, Any]:
    """Per source: whether a sample not newer than the last evaluated one is skipped."""
    return {s.name: s.duplicates for s in cfg.sources if isinstance(s, TimeSettings)}
