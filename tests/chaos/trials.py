"""Crash trials: SIGKILL the daemon's whole process group at random moments, over and over.

A plant publisher keeps many assets cycling through episodes (above the alarm, then normal)
while a killer stops the daemon without warning (during enqueue, during a send, between a send
and its settle: wherever the dice fall) and starts it again. At the end the publisher brings
every asset back to normal, the daemon drains, and we count what reached the CMMS simulator:
each episode exactly one request and one clear, no request without an episode, clears after
their raises. `python -m tests.chaos.run_trials --trials 300` runs a long series.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulators.cmms import CmmsSimulator
from tests.e2e.stack import API_KEY, Stack, vibration_rule
from tests.harness import free_port, running_mosquitto, wait_for

HIGH, LOW = 8.0, 3.0
HIGH_SECONDS, LOW_SECONDS = 0.6, 0.6
STEP_SECONDS = 0.05


@dataclass
class TrialReport:
    trials: int = 0
    kills: int = 0
    episodes_published: int = 0
    requests: int = 0
    clears: int = 0
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.order_violations)

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"{verdict}: {self.trials} trials, {self.kills} SIGKILLs, "
                f"{self.episodes_published} episodes published, {self.requests} requests and "
                f"{self.clears} clears upstream, {len(self.duplicates)} duplicated, "
                f"{len(self.missing)} missing, {len(self.order_violations)} out of order, "
                f"{self.seconds:.0f} s")


class _Plant:
    """Each asset alternates full HIGH and LOW phases, offset so episodes overlap in time.

    A HIGH phase is never cut short (at the start or at the finish), so every one of them is
    a real episode the rule must raise: HIGH_SECONDS is well above the rule's on-delay.
    """

    def __init__(self, stack: Stack, assets: list[str], rng: random.Random) -> None:
        self.stack = stack
        self.assets = assets
        t0 = time.monotonic()
        self._until = {a: t0 + rng.uniform(0, HIGH_SECONDS + LOW_SECONDS) for a in assets}
        self._high = dict.fromkeys(assets, False)
        self.episodes = dict.fromkeys(assets, 0)
        self.stopping = False

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for a in self.assets:
                if now >= self._until[a]:
                    if self._high[a]:
                        self._high[a] = False
                        self._until[a] = now + LOW_SECONDS
                    elif not self.stopping:
                        self._high[a] = True
                        self._until[a] = now + HIGH_SECONDS
                        self.episodes[a] += 1
                self.stack.publish(a, "vibration", HIGH if self._high[a] else LOW)
            if self.stopping and not any(self._high.values()):
                return
            await asyncio.sleep(STEP_SECONDS)

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Let running HIGH phases end, then keep every asset normal until episodes clear."""
        self.stopping = True
        await task
        for _ in range(int(LOW_SECONDS / STEP_SECONDS) + 4):
            for a in self.assets:
                self.stack.publish(a, "vibration", LOW)
            await asyncio.sleep(STEP_SECONDS)


async def run_crash_trials(workdir: Path, trials: int, assets: int = 8, seed: int | None = None,
                           max_uptime_seconds: float = 1.5) -> TrialReport:
    rng = random.Random(seed)
    report = TrialReport()
    started = time.monotonic()
    names = [f"asset-{i:02d}" for i in range(assets)]
    with running_mosquitto(workdir) as broker:
        sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
        await sim.start()
        stack = Stack(workdir, broker, sim)
        port = free_port()
        try:
            stack.write_config(vibration_rule(on_delay=0.2, off_delay=0.2).replace(
                'asset_pattern = "pump-*"', 'asset_pattern = "asset-*"'), http_port=port)
            sim.faults.set("slow", delay_seconds=0.03)  # keep deliveries in flight
            stack.spawn_daemon()
            await stack.wait_subprocess_up(port)
            plant = _Plant(stack, names, rng)
            plant_task = asyncio.create_task(plant.run(), name="plant")
            for _ in range(trials):
                await asyncio.sleep(rng.uniform(0.05, max_uptime_seconds))
                stack.power_cut()
                report.kills += 1
                stack.spawn_daemon()
                await stack.wait_subprocess_up(port)
                report.trials += 1
            await plant.finish(plant_task)
            sim.faults.clear()

            async def drained() -> bool:
                st = await stack.subprocess_status(port)
                if st is None:
                    return False
                pending = st["outbox"]["pending"]
                return (not any(pending.values())
                        and st["pipeline"]["samples"] > 0
                        and not st["open_episodes"])

            await wait_for(drained, 60, "every episode closed and delivered")
            _collect(report, plant, sim)
            assert stack.proc is not None
            stack.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(stack.proc.wait, 30)
        finally:
            stack.close()
            if stack.proc is not None and stack.proc.poll() is None:
                stack.power_cut()
            await sim.stop()
    report.seconds = time.monotonic() - started
    return report


def _collect(report: TrialReport, plant: _Plant, sim: CmmsSimulator) -> None:
    report.episodes_published = sum(plant.episodes.values())
    report.requests = len(sim.requests)
    report.clears = len(sim.status_updates)
    seen: set[str] = set()
    for r in sim.requests:
        if r["external_ref"] in seen:
            report.duplicates.append(r["external_ref"])
        seen.add(r["external_ref"])
    updates: dict[str, list[dict[str, object]]] = {}
    for u in sim.status_updates:
        updates.setdefault(u["request_id"], []).append(u)
    for r in sim.requests:
        got = updates.get(r["id"], [])
        if len(got) > 1:
            report.duplicates.append(f"clear of {r['id']}")
        elif not got:
            report.missing.append(f"clear of {r['id']}")
        elif str(got[0]["created_at"]) < r["created_at"]:
            report.order_violations.append(r["id"])
    for asset in plant.assets:
        n = sum(1 for r in sim.requests if r["body"]["asset"] == asset)
        if n != plant.episodes[asset]:
            report.missing.append(f"{asset}: {plant.episodes[asset]} episodes published, "
                                  f"{n} requests upstream")
