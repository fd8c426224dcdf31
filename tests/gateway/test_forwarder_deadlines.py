"""The forwarder's own deadlines on any sink: the send timeout cancels a send that never ends
(it settles as a RETRY and is sent again), the hung limit flags a silent upstream, and a
cancel from outside (a stop) is never taken for a timeout. One timer serves every request in
flight (gateway/upstream/limits.py `Deadlines`, forwarder.py `_deadlines` for the hung limit),
so these check it reaches each one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import (
    Delivery,
    OutboxRecord,
    Outcome,
    RequestDetails,
    Transition,
    TransitionKind,
)
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from tests.harness import wait_for


class StallingSink:
    """Accepts at once, but stalls (until cancelled) the first `stall` attempts of every
    record whose asset is in `stalling`; counts attempts and cancellations per asset."""

    def __init__(self, stalling: set[str], stall: int = 1) -> None:
        self.name = "cmms"
        self.stalling = stalling
        self.stall = stall
        self.attempts: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        self.accepted: list[str] = []
        self.sent_by: dict[asyncio.Task[object] | None, list[str]] = {}  # task -> its sends
        self.stalled_in: list[asyncio.Task[object] | None] = []  # the task of each stall

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        asset = rec.message.asset
        self.sent_by.setdefault(asyncio.current_task(), []).append(asset)
        self.attempts[asset] = self.attempts.get(asset, 0) + 1
        if asset in self.stalling and self.attempts[asset] <= self.stall:
            self.stalled_in.append(asyncio.current_task())
            try:
                await asyncio.Event().wait()  # an answer that never comes
            except asyncio.CancelledError:
                self.cancelled[asset] = self.cancelled.get(asset, 0) + 1
                raise
        self.accepted.append(asset)
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=f"WR-{asset}")

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        return [await self.send_one(r) for r in batch]

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def raise_of(asset: str) -> Transition:
    ts = time.time()
    return Transition(TransitionKind.RAISED, "vib", asset, "vibration", f"vib/{asset}", 3,
                      8.0, ts, "vibration 8 above 7.1", RequestDetails("High vibration"))


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[OutboxStore]:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as store:
        yield store


async def commit(outbox: OutboxStore, assets: Sequence[str]) -> None:
    t = [raise_of(a) for a in assets]
    await outbox.commit(t, [m for tr in t for m in messages_for(tr, ["cmms"], "s")])


@contextlib.asynccontextmanager
async def forwarding(outbox: OutboxStore, sink: StallingSink, **cfg: float
                     ) -> AsyncIterator[tuple[Forwarder, asyncio.Task[None]]]:
    fwd = Forwarder(sink, outbox, ForwardingConfig(
        retry_initial_seconds=0.05, retry_max_seconds=0.2, idle_poll_seconds=0.05,
        breaker_failures=100, **cfg), asyncio.Event())
    task = asyncio.create_task(fwd.run())
    try:
        yield fwd, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_send_past_the_send_timeout_is_cancelled_and_sent_again_once(
        outbox: OutboxStore) -> None:
    # two stalled sends started at different times, among ones answered at once: the one
    # timer must reach both, and nothing else may be cancelled
    sink = StallingSink({"pump-1", "pump-7"})
    await commit(outbox, [f"pump-{i}" for i in range(5)])
    async with forwarding(outbox, sink, send_timeout_seconds=0.3, hung_after_seconds=30):
        await wait_for(lambda: "pump-1" in sink.accepted, 10, "pump-1 delivered on its retry")
        await commit(outbox, [f"pump-{i}" for i in range(5, 10)])
        await wait_for(lambda: len(sink.accepted) == 10, 10, "all ten delivered")
    assert sorted(sink.accepted) == sorted(f"pump-{i}" for i in range(10))  # once each
    assert sink.cancelled == {"pump-1": 1, "pump-7": 1}
    assert sink.attempts["pump-1"] == sink.attempts["pump-7"] == 2
    trace = await outbox.trace("vib/pump-7")
    assert trace is not None
    assert [(a.outcome, a.error) for a in trace.attempts] == [
        ("retry", "send timed out"), ("accepted", "")], trace.attempts


async def test_senders_are_kept_and_one_that_timed_out_goes_on_sending(
        outbox: OutboxStore) -> None:
    # a sender per slot of the window, not a task per request; the one whose send was
    # cancelled for the timeout is the same task, and must go on to send other records
    sink = StallingSink({"pump-3"})
    assets = [f"pump-{i}" for i in range(60)]
    await commit(outbox, assets)
    async with forwarding(outbox, sink, send_timeout_seconds=0.3, hung_after_seconds=30) as (
            fwd, _):
        await wait_for(lambda: len(sink.accepted) == 60, 10, "all sixty delivered")
    assert sorted(sink.accepted) == sorted(assets)  # once each
    assert sink.cancelled == {"pump-3": 1}
    assert None not in sink.sent_by
    assert len(sink.sent_by) <= fwd.limits.max_in_flight < 60
    [stalled_in] = sink.stalled_in
    sends = sink.sent_by[stalled_in]  # its first pump-3 is the stalled attempt
    assert len(sends) > sends.index("pump-3") + 1, sink.sent_by  # and it went on


async def test_a_stop_during_a_stalled_send_is_a_stop_not_a_timeout(outbox: OutboxStore) -> None:
    # the send timeout falls due while the stop's cancellation is being delivered: the run
    # must still end cancelled, and the record stays pending to be sent again
    sink = StallingSink({"pump-0"}, stall=99)
    await commit(outbox, ["pump-0"])
    async with forwarding(outbox, sink, send_timeout_seconds=0.2, hung_after_seconds=30) as (
            _, task):
        await wait_for(lambda: sink.attempts.get("pump-0", 0) >= 2, 10, "a timed-out retry")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sink.accepted == []
    [rec] = await outbox.records(sink="cmms")
    assert rec.state == "pending"


async def test_a_silent_upstream_is_flagged_hung_and_cleared_by_an_answer(
        outbox: OutboxStore) -> None:
    sink = StallingSink({"pump-0"})
    await commit(outbox, ["pump-0"])
    async with forwarding(outbox, sink, send_timeout_seconds=60, hung_after_seconds=0.2) as (
            fwd, _):
        await wait_for(lambda: fwd.stats.hung, 10, "flagged hung")
        assert sink.accepted == []  # flagged while the send is still waiting
        await commit(outbox, ["pump-1"])
        await wait_for(lambda: "pump-1" in sink.accepted and not fwd.stats.hung, 10,
                       "an answer clears the flag")
