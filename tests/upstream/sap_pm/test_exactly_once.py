"""Whatever faults meet the attempts of a raise and its clear, retrying until accepted gives
exactly one notification per episode, completed once, with one clear note."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Delivery, OutboxRecord, Outcome
from simulators.sap_pm import SapPmSimulator
from tests.upstream.sap_pm.conftest import EQUIPMENT, clear_record, record, sink_config

FAULTS = st.sampled_from(["none", "error_5xx", "rate_429", "drop_after_commit",
                          "expire_session"])
MAX_ATTEMPTS = 12
Send = Callable[[Sequence[OutboxRecord]], Awaitable[Sequence[Delivery]]]


async def _deliver(sim: SapPmSimulator, send: Send, rec: OutboxRecord,
                   faults: list[str]) -> str:
    """Attempts under the given faults (one per attempt, then none) until accepted."""
    for attempt in range(MAX_ATTEMPTS):
        mode = faults[attempt] if attempt < len(faults) else "none"
        sim.faults.set(mode, count=1, retry_after=0)
        (d,) = await send([replace(rec, attempts=attempt)])
        sim.faults.clear()
        if d.outcome is Outcome.ACCEPTED:
            assert d.receipt is not None
            return d.receipt
        assert d.outcome is Outcome.RETRY, d.reason
    raise AssertionError(f"not accepted after {MAX_ATTEMPTS} attempts under {faults}")


async def _episode(raise_faults: list[str], clear_faults: list[str]) -> None:
    async with SapPmSimulator(equipment=EQUIPMENT) as sim:
        sink = sink_config(sim.url).build()
        try:
            number = await _deliver(sim, sink.send, record(), raise_faults)
            assert number == await _deliver(sim, sink.send, clear_record(number), clear_faults)
        finally:
            await sink.aclose()
        (n,) = sim.notifications
        assert n["MaintenanceNotification"] == number
        assert n["NotifProcessingPhase"] == "4"
        assert n["MaintNotificationLongText"].count("[PlantBridge clear") == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(FAULTS, max_size=5), st.lists(FAULTS, max_size=5))
def test_any_fault_sequence_gives_exactly_one_completed_notification(
        raise_faults: list[str], clear_faults: list[str]) -> None:
    asyncio.run(_episode(raise_faults, clear_faults))
