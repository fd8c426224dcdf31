"""A plant that reports by exception, with maintenance mutes: the crash trials' "delays" profile.

Sensors send a value only when it changes (usual with MQTT and Sparkplug), the rule has on and
off delays of a second, and now and then an asset goes into maintenance (`maintenance_mode = 1`,
sent once) and is run above the alarm while muted, reporting every step as a test run would.
A kill that lands during a delay or a mute finds state that no later sample rebuilds: the
pending delay or the mute must come back from storage, or a raise or clear goes missing, or a
muted asset raises a request.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Literal

from tests.e2e.stack import Stack

HIGH, LOW = 8.0, 3.0
ON_DELAY_SECONDS = OFF_DELAY_SECONDS = 1.0
HIGH_SECONDS = LOW_SECONDS = 2.5  # well beyond the delays: every unmuted HIGH is an episode
STEP_SECONDS = 0.05
MUTED_SHARE = 0.3  # of HIGH phases, run during maintenance
MUTE_SIGNAL = "maintenance_mode"

DELAY_RULE = f"""
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "asset-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = {ON_DELAY_SECONDS}
off_delay_seconds = {OFF_DELAY_SECONDS}
severity = 2
title = "High vibration on {{asset}}"
suppress_while = [{{ signal = "{MUTE_SIGNAL}", equals = 1 }}]
"""

Phase = Literal["low", "high", "muted"]


class ReportByExceptionPlant:
    """Each asset alternates LOW and HIGH phases (offset from each other); a HIGH phase is
    muted with probability MUTED_SHARE. Only unmuted HIGH phases count as episodes."""

    def __init__(self, stack: Stack, assets: list[str], rng: random.Random) -> None:
        self.stack = stack
        self.assets = assets
        self._rng = rng
        t0 = time.monotonic()
        self._until = {a: t0 + rng.uniform(0, HIGH_SECONDS + LOW_SECONDS) for a in assets}
        self._phase: dict[str, Phase] = dict.fromkeys(assets, "low")
        self._since = dict.fromkeys(assets, t0)
        self._before: dict[str, Phase] = dict.fromkeys(assets, "low")  # the phase before
        self.episodes = dict.fromkeys(assets, 0)
        self.stopping = False
        for a in assets:
            stack.publish(a, MUTE_SIGNAL, 0)
            stack.publish(a, "vibration", LOW)

    def _enter(self, asset: str, phase: Phase, now: float) -> None:
        was = self._phase[asset]
        self._before[asset] = was
        self._phase[asset], self._since[asset] = phase, now
        if phase == "low":
            self._until[asset] = now + LOW_SECONDS
            self.stack.publish(asset, "vibration", LOW)
            if was == "muted":  # work done: unmute once the value is back to normal
                self.stack.publish(asset, MUTE_SIGNAL, 0)
            return
        self._until[asset] = now + HIGH_SECONDS
        if phase == "muted":
            self.stack.publish(asset, MUTE_SIGNAL, 1)  # before the excursion, same connection
        else:
            self.episodes[asset] += 1
        self.stack.publish(asset, "vibration", HIGH)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for a in self.assets:
                if now >= self._until[a]:
                    if self._phase[a] != "low":
                        self._enter(a, "low", now)
                    elif not self.stopping:
                        self._enter(a, "muted" if self._rng.random() < MUTED_SHARE else "high",
                                    now)
                if self._phase[a] == "muted":
                    self.stack.publish(a, "vibration", HIGH)  # a test run reports every step
            if self.stopping and all(p == "low" for p in self._phase.values()):
                return
            await asyncio.sleep(STEP_SECONDS)

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Let running HIGH phases end; every asset ends LOW and unmuted."""
        self.stopping = True
        await task

    def kill_lands_in(self) -> frozenset[str]:
        """What a kill now interrupts, over all assets: "mute", "on-delay", "off-delay"."""
        now = time.monotonic()
        found: set[str] = set()
        for a in self.assets:
            age, phase = now - self._since[a], self._phase[a]
            if phase == "muted":
                found.add("mute")
            elif phase == "high" and age < ON_DELAY_SECONDS:
                found.add("on-delay")
            elif phase == "low" and age < OFF_DELAY_SECONDS and self._before[a] == "high":
                found.add("off-delay")
        return frozenset(found)
