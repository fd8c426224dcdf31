"""The forwarder with the real outbox, the real REST sink and the CMMS simulator."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path

import pytest

from buffer.attempts import Attempt, MessageFacts
from buffer.errors import StorageFull
from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import Delivery, OutboxRecord, RequestDetails, Transition, TransitionKind
from gateway.upstream.forwarder import BreakerState, ForwardingConfig, retry_delay
from gateway.upstream.forwarder import Forwarder as _Forwarder
from gateway.upstream.rest import RestSinkConfig
from simulators.cmms import CmmsSimulator
from tests.harness import wait_for

FAST = ForwardingConfig(retry_initial_seconds=0.05, retry_max_seconds=0.2, idle_poll_seconds=0.05,
                        breaker_failures=2)


class FlakyOutbox(OutboxStore):
    """The real store, but the next `fail_settles` rounds that settle fail as on a full disk."""

    fail_settles = 0

    async def settle_and_lease(self, deliveries: Sequence[Delivery], now: float, sink: str,
                               limit: int, *, attempts: Sequence[Attempt] = (),
                               facts: Sequence[MessageFacts] = (),
                               exclude: Collection[int] = (),
                               since: float | None = None) -> list[OutboxRecord]:
        if deliveries and self.fail_settles:
            self.fail_settles -= 1
            raise StorageFull(self.path)
        return await super().settle_and_lease(deliveries, now, sink, limit, attempts=attempts,
                                              facts=facts, exclude=exclude, since=since)


def _raise(asset: str, ts: float) -> Transition:
    return Transition(TransitionKind.RAISED, "vib", asset, "vibration", f"vib/{asset}/{ts}", 2,
                      8.0, ts, "vibration 8 above 7.1", RequestDetails("High vibration"))


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    s = CmmsSimulator(host="127.0.0.1", port=0, api_key="k")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def _run(outbox: OutboxStore, sim: CmmsSimulator) -> tuple[_Forwarder, asyncio.Task[None]]:
    sink = RestSinkConfig(type="rest", name="cmms", base_url=sim.url,
                          auth={"kind": "bearer", "token": {"value": "k"}}).build()
    fwd = _Forwarder(sink, outbox, FAST, asyncio.Event())
    return fwd, asyncio.create_task(fwd.run())


async def _stop(fwd: _Forwarder, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await fwd.sink.aclose()


async def test_a_failed_settle_resends_under_the_same_key(tmp_path: Path,
                                                          sim: CmmsSimulator) -> None:
    outbox = await FlakyOutbox.open(tmp_path / "o.sqlite")
    try:
        t = _raise("pump-1", time.time())
        await outbox.commit([t], messages_for(t, ["cmms"], "s"))
        outbox.fail_settles = 2
        fwd, task = await _run(outbox, sim)
        try:
            async def drained() -> bool:
                return not any((await outbox.stats(time.time())).pending.values())
            await wait_for(drained, 10, "delivered and settled")
            assert not task.done()  # the storage fault did not end delivery
            assert "outbox" in fwd.stats.last_error
        finally:
            await _stop(fwd, task)
        assert len(sim.requests) == 1  # sent up to three times, created once
    finally:
        await outbox.close()


async def test_breaker_opens_on_an_outage_and_closes_after(tmp_path: Path,
                                                           sim: CmmsSimulator) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        await sim.go_down()
        ts = time.time()
        for i in range(3):
            t = _raise(f"pump-{i}", ts + i)
            await outbox.commit([t], messages_for(t, ["cmms"], "s"))
        fwd, task = await _run(outbox, sim)
        try:
            await wait_for(lambda: fwd.stats.breaker is not BreakerState.CLOSED, 10,
                           "breaker open")
            await sim.come_up()
            await wait_for(lambda: len(sim.requests) == 3, 15, "all delivered after the outage")
            await wait_for(lambda: fwd.stats.breaker is BreakerState.CLOSED, 10,
                           "breaker closed")
        finally:
            await _stop(fwd, task)


def test_retry_delay_honours_the_server_and_grows_otherwise() -> None:
    cfg = ForwardingConfig(retry_initial_seconds=1, retry_max_seconds=60,
                           retry_after_max_seconds=120)
    assert retry_delay(0, cfg, 30.0, lambda: 0.5) == 30.0
    assert retry_delay(0, cfg, 10_000.0, lambda: 0.5) == 120.0  # a silly Retry-After is capped
    grown = [retry_delay(n, cfg, None, lambda: 1.0) for n in range(10)]
    assert grown[0] == 1 and grown[3] == 8 and grown[-1] == 60
