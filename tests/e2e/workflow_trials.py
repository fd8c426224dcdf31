"""Kill -9 trials of the bearing workflow: SIGKILL the daemon right after one step of the chain
committed at the SAP simulator (notification, stock read, reservation, requisition), optionally
with that step's answer lost as well, restart it, and check that every step happened exactly once.

Used by tests/e2e/test_bearing_workflow.py (a few trials) and by
`python -m tests.e2e.run_workflow_trials --trials 20` (a longer loop).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulators.cmms import CmmsSimulator
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import Stack
from tests.harness import Mosquitto, free_port, wait_for

KILL_POINTS = ("notification", "stock", "reservation", "requisition")
# the in-suite trials: each step once, and the two creates whose answer is also lost
SUITE_TRIALS = (("notification", False), ("stock", False), ("reservation", True),
                ("requisition", False), ("requisition", True))


def _reached(sap: SapPmSimulator, point: str) -> Callable[[], bool]:
    m = sap.materials
    return {"notification": lambda: len(sap.notifications) >= 1,
            "stock": lambda: m.stock_reads >= 1,
            "reservation": lambda: m.created["reservation"] >= 1,
            "requisition": lambda: m.created["requisition"] >= 1}[point]


def _before(point: str) -> str | None:
    """The step whose effect shows that `point`'s write is next (to arm a lost answer)."""
    return {"notification": None, "reservation": "stock", "requisition": "reservation"}.get(point)


@dataclass
class TrialReport:
    trials: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return (f"{self.trials} trials in {self.seconds:.0f} s, "
                f"{len(self.failures)} with a step missing or doubled")


async def one_trial(tmp: Path, broker: Mosquitto, kill_after: str, lose_answer: bool) -> str:
    """One trial; returns "" when every step happened exactly once, else what went wrong."""
    from tests.e2e.test_bearing_workflow import configure  # the same config as the e2e tests

    cmms = CmmsSimulator(host="127.0.0.1", port=0, api_key="unused")
    sap = SapPmSimulator(port=0, equipment=["4711"])
    await cmms.start()
    await sap.start()
    stack = Stack(tmp, broker, cmms)
    try:
        sap.materials.set_stock("BRG-6205", "1010", "0001", 1)  # low: a requisition follows
        sap.materials.set_stock("SEAL-40", "1010", "0001", 5)
        port = free_port()
        configure(stack, sap, http_port=port)
        if lose_answer and kill_after == "notification":
            sap.faults.set("drop_after_commit", count=1, methods=["POST"])
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
        before = _before(kill_after)
        if lose_answer and before is not None:
            await wait_for(_reached(sap, before), 30, f"{before} done")
            sap.faults.set("drop_after_commit", count=1, methods=["POST"])
        await wait_for(_reached(sap, kill_after), 30, f"{kill_after} done")
        stack.power_cut()
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        await wait_for(_reached(sap, "requisition"), 40, "the chain finished")
        await stack.wait_drained(port, 40)
        m = sap.materials
        got = (len(sap.notifications), m.created["reservation"], m.created["requisition"])
        if got != (1, 1, 1):
            return (f"kill after {kill_after} (answer lost: {lose_answer}): notifications, "
                    f"reservations, requisitions = {got}")
        return ""
    finally:
        stack.close()
        if stack.proc is not None and stack.proc.poll() is None:
            stack.power_cut()
        await sap.stop()
        await cmms.stop()


async def run_workflow_trials(tmp: Path, broker: Mosquitto,
                              plan: list[tuple[str, bool]]) -> TrialReport:
    report = TrialReport()
    t0 = time.monotonic()
    for i, (point, lose) in enumerate(plan):
        where = tmp / f"trial-{i}"
        where.mkdir()
        said = await one_trial(where, broker, point, lose)
        report.trials += 1
        if said:
            report.failures.append(said)
        else:
            shutil.rmtree(where, ignore_errors=True)
    report.seconds = time.monotonic() - t0
    return report


def random_plan(trials: int, seed: int | None) -> list[tuple[str, bool]]:
    rng = random.Random(seed)
    return [(rng.choice(KILL_POINTS), rng.random() < 0.5) for _ in range(trials)]
