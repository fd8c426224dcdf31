"""The real outbox and forwarder driving the SAP PM sink: one notification per episode through a
lost answer and an expired session, and the clear completes it through the kept receipt."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import TransitionKind
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from simulators.sap_pm import SapPmSimulator
from tests.harness import wait_for
from tests.upstream.sap_pm.conftest import SinkFactory, transition

FAST = ForwardingConfig(retry_initial_seconds=0.05, retry_max_seconds=0.2,
                        idle_poll_seconds=0.05, breaker_failures=2)


async def test_lost_create_and_expired_session_still_give_one_completed_notification(
        tmp_path: Path, sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        now = time.time()
        raised = replace(transition(TransitionKind.RAISED), ts=now)
        await outbox.commit([raised], messages_for(raised, ["sap"], "site-a"))
        sim.faults.set("drop_after_commit", count=1)
        wake = asyncio.Event()
        fwd = Forwarder(make_sink(sim.url, unclear_retry_after_seconds=0.1), outbox, FAST, wake)
        task = asyncio.create_task(fwd.run())

        async def drained() -> bool:
            return not any((await outbox.stats(time.time())).pending.values())

        try:
            await wait_for(drained, 10, "the raise delivered")
            assert len(sim.notifications) == 1
            assert sim.received[("POST", "MaintenanceNotification", 0)] == 1
            assert fwd.stats.retried >= 1

            sim.faults.set("expire_session", count=1)
            cleared = replace(transition(TransitionKind.CLEARED), ts=now + 60)
            await outbox.commit([cleared], messages_for(cleared, ["sap"], "site-a"))
            wake.set()
            await wait_for(drained, 10, "the clear delivered")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        (n,) = sim.notifications
        assert n["NotifProcessingPhase"] == "4"
        assert sim.received[("PATCH", "MaintenanceNotification(key)", 403)] == 1
        assert fwd.stats.rejected == 0


async def test_a_create_still_committing_is_not_duplicated_by_a_quick_retry(
        tmp_path: Path, sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    """SAP commits 1 s after our 0.3 s timeout. The forwarder alone would retry in ~0.05 s,
    find nothing and create again; the sink's unclear window holds the retry back."""
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        raised = replace(transition(TransitionKind.RAISED), ts=time.time())
        await outbox.commit([raised], messages_for(raised, ["sap"], "site-a"))
        sim.faults.set("slow", count=1, delay_seconds=1.0, methods=["POST"])
        sink = make_sink(sim.url, total_timeout_seconds=0.3, connect_timeout_seconds=0.3,
                         unclear_retry_after_seconds=1.5)
        fwd = Forwarder(sink, outbox, FAST, asyncio.Event())
        task = asyncio.create_task(fwd.run())

        async def drained() -> bool:
            return not any((await outbox.stats(time.time())).pending.values())

        try:
            await wait_for(drained, 10, "the raise delivered")
            await wait_for(lambda: sim.active_requests == 0, 5, "the slow create to finish")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert len(sim.notifications) == 1
        assert fwd.stats.retried == 1
        assert sim.received[("POST", "MaintenanceNotification", 201)] == 1  # the late one
