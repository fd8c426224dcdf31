"""Issue 13: kill -9 between each pair of workflow steps, 20 trials per upstream → every step
exactly once at the upstream (SAP PM, the generic REST CMMS, Maximo).

Each trial SIGKILLs the daemon subprocess right after one step committed at the upstream's
simulator (its answer parked, or, for half of the kill points, lost), restarts it, and counts
what arrived for that trial's asset: requests, reservations with the right items,
requisitions, clears. The kill points cycle through every step in order (see
tests/e2e/workflow_trials.py; longer and shuffled runs: `python -m tests.e2e.run_workflow_trials`).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.stack import API_KEY
from tests.e2e.workflow_trials import kill_points, run_workflow_trials, suite_plan
from tests.e2e.workflow_trials_gate import Hold, RequestGate
from tests.e2e.workflow_trials_upstreams import UPSTREAMS, PartsCmms, RestTrials, posts_to
from tests.harness import Mosquitto, wait_for

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


class ForgetfulCmms(PartsCmms):
    """A CMMS that ignores Idempotency-Key: every POST creates (a broken API, or a broken
    gateway that changed its keys, looks like this from the trials' side)."""

    async def _idempotent(self, request: web.Request, action: Any) -> web.StreamResponse:
        stored = action(request, request.headers.get("Idempotency-Key", ""),
                        await request.read())
        return web.Response(status=stored.status, body=stored.body, headers=stored.headers)


@pytest.mark.slow
async def test_a_doubled_step_fails_the_trial(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The trials can fail: against a CMMS that forgets keys, a reservation whose answer was
    lost is made twice, and the trial says so."""
    up = RestTrials()
    up.sim = ForgetfulCmms()
    report = await run_workflow_trials(up, tmp_path, mosquitto, [("reservation", Hold.DROP)])
    assert report.trials == 1
    [failure] = report.failures
    assert re.search(r"killed at reservation \(drop\): reservation x[2-9]", failure), failure


async def test_the_gate_parks_or_drops_only_a_committed_answer() -> None:
    sim = PartsCmms()
    await sim.start()
    gate = RequestGate(sim)
    url = sim.url + "/api/v1/reservations"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with aiohttp.ClientSession() as http:
            gate.arm(posts_to("/api/v1/reservations"), Hold.DROP)
            async with http.post(url, json={"a": 1}) as r:  # no key: refused, not held
                assert r.status == 401
            assert not gate.reached
            with pytest.raises(aiohttp.ClientError):
                async with http.post(url, json={"a": 1},
                                     headers=headers | {"Idempotency-Key": "k1"}) as r:
                    await r.read()
            assert gate.reached and len(sim.reservations) == 1  # committed, answer lost
            gate.arm(posts_to("/api/v1/reservations"), Hold.AFTER)
            sent = asyncio.create_task(http.post(
                url, json={"a": 2}, headers=headers | {"Idempotency-Key": "k2"}))
            await wait_for(lambda: gate.reached, 10, "the answer parked")
            assert len(sim.reservations) == 2 and not sent.done()
            gate.release()
            async with await sent as r:
                assert r.status == 201
            assert gate.committed(posts_to("/api/v1/reservations")) == 1  # since the arm
    finally:
        gate.release()
        await sim.stop()
