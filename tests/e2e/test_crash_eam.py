"""SAP PM and Maximo accept no idempotency key. SIGKILL the daemon while a create is slowly
committing upstream, restart at once: the restarted gateway must find that late commit, not
create a second notification or ticket."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from simulators.maximo import MaximoSimulator
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import free_port, wait_for

SLOW_COMMIT_SECONDS = 8.0  # much longer than a restart takes
UNCLEAR_WINDOW_SECONDS = 10.0


@dataclass
class Eam:
    kind: str
    sim: Any
    upstream: str

    def created(self) -> list[dict[str, Any]]:
        return list(self.sim.notifications if self.kind == "sap_pm" else self.sim.tickets)

    def closed(self) -> bool:
        [rec] = self.created()
        if self.kind == "sap_pm":
            return str(rec.get("NotifProcessingPhase")) == "4"
        return str(rec.get("status")) == "RESOLVED"


@pytest.fixture(params=["sap_pm", "maximo"])
async def eam(request: pytest.FixtureRequest) -> AsyncIterator[Eam]:
    if request.param == "sap_pm":
        sim: Any = SapPmSimulator(port=0, equipment=["4711"])
        await sim.start()
        sim.faults.set("slow", count=1, delay_seconds=SLOW_COMMIT_SECONDS, methods=["POST"])
        upstream = f"""
[[upstreams]]
type = "sap_pm"
name = "sap"
sap_client = "100"
base_url = "{sim.url}"
auth = {{ kind = "basic", user = "PB_COMM", password = {{ value = "secret" }} }}
total_timeout_seconds = 10
unclear_retry_after_seconds = {UNCLEAR_WINDOW_SECONDS}
[upstreams.asset_map.pump-1]
technical_object = "4711"
"""
    else:
        sim = MaximoSimulator(port=0, api_key="k")
        await sim.start()
        sim.faults.set("slow", count=1, delay_seconds=SLOW_COMMIT_SECONDS, writes_only=True)
        upstream = f"""
[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{sim.url}"
auth = {{ kind = "api_key", key = {{ value = "k" }} }}
siteid = "BEDFORD"
total_timeout_seconds = 10
unclear_retry_after_seconds = {UNCLEAR_WINDOW_SECONDS}
[upstreams.asset_map]
"pump-1" = {{ assetnum = "PUMP-1" }}
"""
    try:
        yield Eam(request.param, sim, upstream)
    finally:
        await sim.stop()


@pytest.mark.slow
async def test_sigkill_during_a_slow_create_gives_exactly_one(stack: Stack, eam: Eam) -> None:
    port = free_port()
    stack.write_config(vibration_rule(), http_port=port, upstream=eam.upstream)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play("pump-1", [3.0] + [8.0] * 10)
    # The one slow fault was taken (its count runs out) and that request is still being handled.
    await wait_for(lambda: eam.sim.faults.remaining != 1 and eam.sim.active_requests > 0, 15,
                   "the slow create in flight")
    stack.power_cut()  # mid-create: the upstream commits later, nobody hears the answer
    killed_at = time.monotonic()
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    assert time.monotonic() - killed_at < SLOW_COMMIT_SECONDS, "restart slower than the commit"

    async def delivered() -> bool:
        st = await stack.subprocess_status(port)
        return st is not None and not any(st["outbox"]["pending"].values()) \
            and len(eam.created()) >= 1
    await wait_for(delivered, 30, "the raise settled after the restart")
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(eam.closed, 30, "the clear applied to the one record")
    await wait_for(lambda: eam.sim.active_requests == 0, SLOW_COMMIT_SECONDS + 10,
                   "the upstream finished every request, the slow create included")
    assert len(eam.created()) == 1, eam.created()
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(stack.proc.wait, 20)
