"""Kill -9 trials of the maintenance workflow, for any upstream: SIGKILL the daemon right after
one step committed at the upstream's simulator (its answer parked, or lost), restart it, and
check that every step happened exactly once.

What makes them cheap (20 per upstream run in `make test`):

* one broker, one simulator and one daemon state dir per upstream for all its trials; each trial
  is a fresh asset (`t-0000`, `t-0001`, ...), so its records never mix with an earlier trial's;
* the daemon restarted after a trial's kill is the daemon of the next trial: N trials cost N+1
  daemon starts, not 2N;
* the kill lands exactly at the chosen step: `RequestGate` parks (or drops) that step's answer
  at the simulator and the trial waits on that, on /status and on the simulator's data, never
  on a sleep;
* the rule raises and clears on the first sample past its limits (no debounce delays).

An upstream is a `TrialUpstream` (tests/e2e/workflow_trials_upstreams.py): its simulator, its
`[[upstreams]]` config, its steps (name + which request commits it) and what arrived per asset.
Used by tests/e2e/test_workflow_trials.py and `python -m tests.e2e.run_workflow_trials`.
"""

from __future__ import annotations

import abc
import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulators.cmms import CmmsSimulator
from simulators.httpsim import HttpSimulator
from tests.e2e.stack import Stack
from tests.e2e.workflow_trials_gate import Hold, Matcher, RequestGate
from tests.harness import Mosquitto, free_port, wait_for

RULE = """
[[rule]]
id = "bearing-wear"
kind = "threshold"
asset_pattern = "t-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 0
off_delay_seconds = 0
severity = 2
failure_code = "BEARING"
title = "Bearing wear on {asset}"
"""

# Each trial asset's registry entry: one SAP equipment and one Maximo asset for all (the
# default `existing_work = "create"` never looks at other records of the same object), and the
# two parts a bearing failure needs. Stock stays as the simulators are seeded: the bearing
# below its reorder level (a requisition every time), the seal above it.
ASSET = """
[assets.{asset}]
sap = {{ equipment = "4711", planning_plant = "1010" }}
maximo = {{ assetnum = "PUMP-1" }}

[[assets.{asset}.spare_parts.BEARING]]
material = "BRG-6205"
quantity = 2
unit = "EA"
plant = "1010"
storage_location = "0001"
reorder_level = 4

[[assets.{asset}.spare_parts.BEARING]]
material = "SEAL-40"
quantity = 1
unit = "EA"
plant = "1010"
storage_location = "0001"
reorder_level = 2
"""
BEARING_PARTS = [("BRG-6205", 2.0, "EA"), ("SEAL-40", 1.0, "EA")]  # what a reservation holds
LOW_PART = ("BRG-6205", 5.0)  # stock 1, reorder level 4, 2 taken: order 4 - 1 + 2
# normal, past the limit (raise at once), back to normal (clear at once)
EPISODE = [3.0, 8.0, 8.0, 3.0, 3.0]
STEP_SECONDS = 0.02
UP_SECONDS = 30.0  # a daemon start on a loaded 2-core box
DONE_SECONDS = 40.0  # every step of a trial arrived after the restart


def asset_of(trial: int) -> str:
    return f"t-{trial:04d}"


@dataclass(frozen=True, slots=True)
class Step:
    """One kill point: a step of the workflow and the request that commits it upstream."""

    name: str
    match: Matcher


class TrialUpstream(abc.ABC):
    """One upstream under trial. Adding a step = listing it in `steps` and, when it has an
    effect upstream, counting that effect in `arrived`."""

    name: str
    steps: tuple[Step, ...]
    sim: HttpSimulator
    # the sinks' unclear_retry_after_seconds: short, as the gate's commits are never late,
    # unless Hold.LATE is planned (then longer than a restart)
    unclear_seconds: float = 0.2

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the simulator, seeded for every trial (stock levels)."""

    async def stop(self) -> None:
        await self.sim.stop()

    @abc.abstractmethod
    def upstream_config(self) -> str:
        """The `[[upstreams]]` TOML of this upstream, pointing at the simulator."""

    @abc.abstractmethod
    def arrived(self, asset: str, gate: RequestGate) -> dict[str, int]:
        """Per effect (request, reservation, ..., clear): how many of `asset`'s episode arrived
        at the simulator. A trial passes when each is exactly 1. `gate.seen` holds the requests
        since this trial's kill point was armed (the asset is new: all of its requests)."""

    def wrong(self, asset: str) -> list[str]:
        """What arrived but with the wrong content (items, quantities, references); asked only
        when `arrived` counted exactly one of each."""
        return []

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


class Inconclusive(Exception):
    """A trial that could not test what it meant to (a LATE commit on a box too slow for the
    unclear window); counted apart, not a failure."""


@dataclass
class TrialReport:
    upstream: str = ""
    trials: int = 0
    failures: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_trial: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        worst = max(self.per_trial, default=0.0)
        mean = sum(self.per_trial) / len(self.per_trial) if self.per_trial else 0.0
        return (f"{self.upstream}: {self.trials} trials in {self.seconds:.1f} s "
                f"({mean:.2f} s mean, {worst:.2f} s worst per trial), "
                f"{len(self.failures)} with a step missing or doubled"
                + (f", {len(self.inconclusive)} inconclusive (raise --late-window)"
                   if self.inconclusive else ""))


SUITE_HOLDS = (Hold.AFTER, Hold.DROP)  # the "right after the commit, half lost"


def kill_points(up: TrialUpstream, holds: Sequence[Hold] = SUITE_HOLDS
                ) -> list[tuple[str, Hold]]:
    """Every step under each hold: by default its answer parked, then its answer lost."""
    return [(s.name, h) for h in holds for s in up.steps]


def suite_plan(up: TrialUpstream, trials: int) -> list[tuple[str, Hold]]:
    """`trials` kill points, cycling through all of them in order (deterministic for CI)."""
    points = kill_points(up)
    return [points[i % len(points)] for i in range(trials)]


def random_plan(up: TrialUpstream, trials: int, seed: int | None, *, late: bool = False
                ) -> list[tuple[str, Hold]]:
    """Every kill point once per round, each round in a random order; the long runs also kill
    with the step's request in flight (Hold.BEFORE: it commits after the kill) and, with
    `late`, commit it only while the restarted daemon runs (Hold.LATE: needs an unclear window
    longer than a restart, `TrialUpstream.unclear_seconds`)."""
    rng = random.Random(seed)
    holds = (*SUITE_HOLDS, Hold.BEFORE, *((Hold.LATE,) if late else ()))
    plan: list[tuple[str, Hold]] = []
    while len(plan) < trials:
        points = kill_points(up, holds)
        rng.shuffle(points)
        plan += points
    return plan[:trials]


class Trials:
    """One upstream's trials: one simulator, one daemon state, one daemon at a time."""

    def __init__(self, up: TrialUpstream, tmp: Path, broker: Mosquitto, trials: int) -> None:
        self.up = up
        self.gate = RequestGate(up.sim)
        # Stack wants a CMMS simulator for its default REST upstream; ours is given explicitly
        cmms = up.sim if isinstance(up.sim, CmmsSimulator) else CmmsSimulator()
        self.stack = Stack(tmp, broker, cmms)
        self.port = free_port()
        (tmp / "assets.toml").write_text("".join(ASSET.format(asset=asset_of(i))
                                                 for i in range(trials)))
        path = self.stack.write_config(RULE, upstream=up.upstream_config(), http_port=self.port)
        path.write_text(path.read_text().replace(
            'site = "e2e"', 'site = "e2e"\nassets_file = "assets.toml"', 1))

    async def start(self) -> None:
        self.stack.spawn_daemon()
        await self.stack.wait_subprocess_up(self.port)

    def close(self) -> None:
        self.gate.release()
        self.stack.close()
        if self.stack.proc is not None and self.stack.proc.poll() is None:
            self.stack.power_cut()

    async def one(self, trial: int, step: str, hold: Hold) -> str:
        """One trial; "" when every step of its asset arrived exactly once, else what did not.
        The daemon is up before and after."""
        asset, up, stack = asset_of(trial), self.up, self.stack
        self.gate.arm(up.step(step).match, hold)
        await stack.play(asset, EPISODE, step_seconds=STEP_SECONDS)
        await wait_for(lambda: self.gate.reached, DONE_SECONDS, f"{asset}: {step} at its hold")
        stack.power_cut()
        killed = time.monotonic()
        if hold is not Hold.LATE:
            self.gate.release()  # a parked answer goes to a dead client
        stack.spawn_daemon()
        await stack.wait_subprocess_up(self.port)
        if hold is Hold.LATE:
            # The old daemon's request commits halfway through the unclear window: a sink that
            # looks before the window ends misses it and doubles the step. Time is what is
            # under test here, so this one wait is on the clock.
            restart = time.monotonic() - killed
            if restart >= up.unclear_seconds / 2:
                self.gate.release()
                raise Inconclusive(f"{asset} killed at {step} ({hold}): the restart took "
                                   f"{restart:.1f} s, over half the unclear window")
            await asyncio.sleep(killed + up.unclear_seconds / 2 - time.monotonic())
            self.gate.release()
        await wait_for(lambda: all(n >= 1 for n in up.arrived(asset, self.gate).values()),
                       DONE_SECONDS, f"{asset}: every step arrived after the kill at {step}")
        await stack.wait_drained(self.port, DONE_SECONDS)
        got = up.arrived(asset, self.gate)
        said = [f"{name} x{n}" for name, n in got.items() if n != 1]
        if not said:  # one of each: is each the right one?
            said = up.wrong(asset)
        return f"{asset} killed at {step} ({hold}): {', '.join(said)}" if said else ""


async def run_workflow_trials(up: TrialUpstream, tmp: Path, broker: Mosquitto,
                              plan: Sequence[tuple[str, Hold]]) -> TrialReport:
    """Run `plan` (step, hold) against `up`; a trial that times out counts as a failure and
    the run goes on with a fresh daemon."""
    report = TrialReport(upstream=up.name)
    t0 = time.monotonic()
    await up.start()
    trials = Trials(up, tmp, broker, len(plan))
    try:
        await trials.start()
        for i, (step, hold) in enumerate(plan):
            started = time.monotonic()
            try:
                said = await trials.one(i, step, hold)
            except Inconclusive as exc:
                said = ""
                report.inconclusive.append(str(exc))
            except AssertionError as exc:
                said = f"{asset_of(i)} killed at {step} ({hold}): {exc}"
                trials.gate.release()
                if trials.stack.proc is None or trials.stack.proc.poll() is not None:
                    await trials.start()
            report.trials += 1
            report.per_trial.append(time.monotonic() - started)
            if said:
                report.failures.append(said)
    finally:
        trials.close()
        await up.stop()
    report.seconds = time.monotonic() - t0
    return report


def count_where(rows: Sequence[Mapping[str, object]], **equal: object) -> int:
    """How many rows hold every given field value."""
    return sum(1 for r in rows if all(r.get(k) == v for k, v in equal.items()))
