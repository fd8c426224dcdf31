"""Issue 13: kill -9 between each pair of workflow steps, 20 trials per upstream → every step
exactly once at the upstream (SAP PM, the generic REST CMMS, Maximo).

Each trial SIGKILLs the daemon subprocess right after one step committed at the upstream's
simulator (its answer parked, or, for half of the kill points, lost), restarts it, and counts
what arrived for that trial's asset: requests, reservations with the right items,
requisitions, clears. The kill points cycle through every step in order (see
tests/e2e/workflow_trials.py; longer and shuffled runs: `python -m tests.e2e.run_workflow_trials`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.workflow_trials import kill_points, run_workflow_trials, suite_plan
from tests.e2e.workflow_trials_upstreams import UPSTREAMS
from tests.harness import Mosquitto

TRIALS_PER_UPSTREAM = 20


@pytest.mark.slow
@pytest.mark.parametrize("upstream", sorted(UPSTREAMS))
async def test_kill_between_steps_gives_every_step_exactly_once(
        tmp_path: Path, mosquitto: Mosquitto, upstream: str) -> None:
    up = UPSTREAMS[upstream]()
    plan = suite_plan(up, TRIALS_PER_UPSTREAM)
    assert set(plan) == set(kill_points(up)), "20 trials must reach every kill point"
    report = await run_workflow_trials(up, tmp_path, mosquitto, plan)
    print(report.summary())
    assert report.trials == TRIALS_PER_UPSTREAM
    assert report.ok, report.failures
