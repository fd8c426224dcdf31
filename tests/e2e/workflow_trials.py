"""Kill -9 trials of the bearing workflow: SIGKILL the daemon while one step of the parts chain
is held at the SAP simulator (in flight before its commit, committed before its answer, or
committed with its answer lost), restart it, and check that every step happened exactly once.

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
from simulators.sap_pm.materials import Hold
from tests.e2e.stack import Stack
from tests.harness import Mosquitto, free_port, wait_for

# (step, hold): where the daemon is killed. "before": the step's request is in flight and
# commits only after the kill; "after": committed, its answer not yet sent; "drop": committed,
# its answer lost, the daemon waiting to look it up again.
ENTITY = {"stock": "A_MatlStkInAcctMod", "reservation": "A_ReservationDocumentHeader",
          "requisition": "A_PurchaseRequisitionHeader"}
KILL_POINTS = (("stock", Hold.BEFORE), ("reservation", Hold.BEFORE),
               ("reservation", Hold.AFTER), ("reservation", Hold.DROP),
               ("requisition", Hold.BEFORE), ("requisition", Hold.AFTER),
               ("requisition", Hold.DROP))
SUITE_TRIALS = (("stock", Hold.BEFORE), ("reservation", Hold.BEFORE),
                ("reservation", Hold.AFTER), ("reservation", Hold.DROP),
                ("requisition", Hold.AFTER))


def _at_kill_point(sap: SapPmSimulator, step: str, hold: Hold) -> Callable[[], bool]:
    m = sap.materials
    if hold is Hold.DROP:
        return lambda: m.created[step] >= 1 and not m.holds
    return lambda: m.held > 0


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


async def one_trial(tmp: Path, broker: Mosquitto, step: str, hold: Hold) -> str:
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
        sap.materials.hold(ENTITY[step], hold)
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
        await wait_for(_at_kill_point(sap, step, hold), 30, f"{step} at its {hold} hold")
        stack.power_cut()
        sap.materials.release()  # a request held "before" commits now, its client dead
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        m = sap.materials
        await wait_for(lambda: m.created["requisition"] >= 1, 40, "the chain finished")
        await stack.wait_drained(port, 40)
        got = (len(sap.notifications), m.created["reservation"], m.created["requisition"])
        if got != (1, 1, 1):
            return (f"kill at {step} ({hold}): notifications, reservations, requisitions = "
                    f"{got}")
        return ""
    finally:
        stack.close()
        if stack.proc is not None and stack.proc.poll() is None:
            stack.power_cut()
        sap.materials.release()
        await sap.stop()
        await cmms.stop()


async def run_workflow_trials(tmp: Path, broker: Mosquitto,
                              plan: list[tuple[str, Hold]]) -> TrialReport:
    report = TrialReport()
    t0 = time.monotonic()
    for i, (step, hold) in enumerate(plan):
        where = tmp / f"trial-{i}"
        where.mkdir()
        said = await one_trial(where, broker, step, hold)
        report.trials += 1
        if said:
            report.failures.append(said)
        else:
            shutil.rmtree(where, ignore_errors=True)
    report.seconds = time.monotonic() - t0
    return report


def random_plan(trials: int, seed: int | None) -> list[tuple[str, Hold]]:
    """Every kill point once per round, in a random order."""
    rng = random.Random(seed)
    plan: list[tuple[str, Hold]] = []
    while len(plan) < trials:
        points = list(KILL_POINTS)
        rng.shuffle(points)
        plan += points
    return plan[:trials]
