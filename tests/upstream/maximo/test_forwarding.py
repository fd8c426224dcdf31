"""The real outbox and forwarder driving the Maximo sink: one SR per episode, and its clear
finds it through the receipt the outbox kept."""

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
from simulators.maximo import MaximoSimulator
from tests.harness import wait_for
from tests.upstream.maximo.conftest import SinkFactory, transition

FAST = ForwardingConfig(retry_initial_seconds=0.05, retry_max_seconds=0.2,
                        idle_poll_seconds=0.05, breaker_failures=2)


async def test_drop_after_commit_and_a_conflict_still_give_one_resolved_sr(
        tmp_path: Path, maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        now = time.time()
        raised = replace(transition(TransitionKind.RAISED), ts=now)
        await outbox.commit([raised], messages_for(raised, ["maximo"], "site-a"))
        maximo.faults.set("drop_after_commit", count=1)
        wake = asyncio.Event()
        fwd = Forwarder(make_sink(maximo.url, unclear_retry_after_seconds=0.1), outbox, FAST,
                        wake)
        task = asyncio.create_task(fwd.run())

        async def drained() -> bool:
            return not any((await outbox.stats(time.time())).pending.values())

        try:
            await wait_for(drained, 10, "the raise delivered")
            assert len(maximo.tickets) == 1 and maximo.count("POST", "/os/mxapisr", 0) == 1
            assert fwd.stats.retried >= 1

            maximo.faults.set("conflict_412", count=1)
            cleared = replace(transition(TransitionKind.CLEARED), ts=now + 60)
            await outbox.commit([cleared], messages_for(cleared, ["maximo"], "site-a"))
            wake.set()
            await wait_for(drained, 10, "the clear delivered")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        [sr] = maximo.tickets
        assert sr["status"] == "RESOLVED"
        assert maximo.count("PATCH", "/os/mxapisr/{id}", 412) == 1
        assert fwd.stats.rejected == 0
