"""The forwarder's pipeline against the real CMMS simulator: limits counted at the simulator,
Retry-After pausing the whole upstream, a hung upstream, recovery after an outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import RequestDetails, Transition, TransitionKind
from gateway.upstream.forwarder import BreakerState, Forwarder, ForwardingConfig
from gateway.upstream.rest import RestSinkConfig
from simulators.cmms import CmmsSimulator
from tests.harness import wait_for

FAST = ForwardingConfig(retry_initial_seconds=0.1, retry_max_seconds=300.0,
                        idle_poll_seconds=0.05, breaker_failures=2, probe_max_seconds=0.5)


def raise_of(asset: str, ts: float, severity: int = 3) -> Transition:
    return Transition(TransitionKind.RAISED, "vib", asset, "vibration", f"vib/{asset}/{ts}",
                      severity, 8.0, ts, "vibration 8 above 7.1", RequestDetails("High vibration"))


async def backlog(outbox: OutboxStore, n: int, prefix: str = "pump") -> None:
    ts = time.time()
    for start in range(0, n, 500):
        t = [raise_of(f"{prefix}-{i}", ts + i * 1e-3) for i in range(start, min(n, start + 500))]
        await outbox.commit(t, [m for tr in t for m in messages_for(tr, ["cmms"], "s")])


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    s = CmmsSimulator(host="127.0.0.1", port=0, api_key="k")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[OutboxStore]:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as store:
        yield store


@contextlib.asynccontextmanager
async def forwarding(outbox: OutboxStore, sim: CmmsSimulator, cfg: ForwardingConfig = FAST,
                     **upstream: Any) -> AsyncIterator[Forwarder]:
    sink = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": sim.url,
        "auth": {"kind": "bearer", "token": {"value": "k"}}, **upstream}).build()
    fwd = Forwarder(sink, outbox, cfg, asyncio.Event())
    task = asyncio.create_task(fwd.run())
    try:
        yield fwd
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.aclose()


def assert_once_each(sim: CmmsSimulator, n: int) -> None:
    refs = [r["external_ref"] for r in sim.requests]
    assert len(refs) == n and len(set(refs)) == n


async def test_never_more_in_flight_than_the_cap(outbox: OutboxStore,
                                                 sim: CmmsSimulator) -> None:
    await backlog(outbox, 30)
    sim.faults.set("slow", delay_seconds=0.1)  # every request holds its slot for a while
    async with forwarding(outbox, sim, limits={"max_in_flight": 3,
                                               "max_requests_per_second": None}):
        await wait_for(lambda: len(sim.requests) == 30, 30, "all delivered")
    assert sim.peak_active == 3  # the cap was used, and never exceeded
    assert_once_each(sim, 30)


async def test_never_faster_than_the_rate(outbox: OutboxStore, sim: CmmsSimulator) -> None:
    await backlog(outbox, 40)
    async with forwarding(outbox, sim, limits={"max_in_flight": 8, "burst": 2,
                                               "max_requests_per_second": 20.0}):
        await wait_for(lambda: len(sim.requests) == 40, 30, "all delivered")
    at = sim.arrivals
    # at most the burst plus the rate in any second (a token bucket's promise; one more for
    # a server loop that handles two requests late on a busy box); unlimited would be ~40
    worst = max(sum(1 for t in at if a <= t < a + 1.0) for a in at)
    assert worst <= 2 + 20 * 1.0 + 1, worst
    assert at[-1] - at[0] >= (40 - 2) / 20 * 0.9
    assert_once_each(sim, 40)


async def test_retry_after_pauses_the_whole_upstream(outbox: OutboxStore,
                                                     sim: CmmsSimulator) -> None:
    await backlog(outbox, 20)
    sim.faults.set("rate_429", count=1, retry_after=1)
    async with forwarding(outbox, sim, limits={"max_in_flight": 4,
                                               "max_requests_per_second": None}):
        await wait_for(lambda: len(sim.requests) == 20, 30, "all delivered")
    first = sim.arrivals[0]  # the one answered 429, Retry-After: 1
    # requests already on their way may land just after it; then nothing for the second
    during = [t - first for t in sim.arrivals if first + 0.2 < t < first + 0.9]
    assert during == [], during
    assert sim.count("POST", "/api/v1/maintenance-requests", 429) == 1
    assert_once_each(sim, 20)


async def test_adaptive_cap_halves_on_429_and_grows_back(outbox: OutboxStore,
                                                         sim: CmmsSimulator) -> None:
    await backlog(outbox, 80)
    sim.faults.set("rate_429", count=2, retry_after=0)
    seen: list[int] = []

    async def watch(fwd: Forwarder) -> None:  # the cap can halve and grow back within ms
        while True:
            seen.append(fwd.stats.in_flight_cap)
            await asyncio.sleep(0)

    async with forwarding(outbox, sim, limits={"max_in_flight": 8, "adaptive": True,
                                               "max_requests_per_second": None}) as fwd:
        watcher = asyncio.create_task(watch(fwd))
        await wait_for(lambda: len(sim.requests) == 80, 30, "all delivered")
        await wait_for(lambda: fwd.stats.in_flight_cap == 8, 10, "the cap grew back")
        watcher.cancel()
    assert min(seen) <= 4, sorted(set(seen))  # halved on a 429 (twice: 2)
    assert_once_each(sim, 80)


async def test_a_hung_upstream_is_flagged_within_the_first_byte_timeout(
        outbox: OutboxStore, sim: CmmsSimulator) -> None:
    await backlog(outbox, 20)
    sim.faults.set("hang")  # accept and never answer, until cleared
    async with forwarding(outbox, sim, first_byte_timeout_seconds=0.5,
                          total_timeout_seconds=10, connect_timeout_seconds=1,
                          limits={"max_in_flight": 4, "max_requests_per_second": None}) as fwd:
        await wait_for(lambda: bool(sim.arrivals), 10, "a first request")
        await wait_for(lambda: fwd.stats.hung, 10, "flagged hung")
        flagged_after = time.monotonic() - sim.arrivals[0]
        assert flagged_after < 0.5 + 1.0, flagged_after  # the limit, and slack for a busy box
        assert fwd.stats.breaker is not BreakerState.CLOSED
        # while down: one probe at a time, not the whole backlog
        await asyncio.sleep(1.5)
        assert len(sim.arrivals) <= 4 + 8, len(sim.arrivals)
        sim.faults.clear()
        await wait_for(lambda: len(sim.requests) == 20, 30, "everything after the hang")
        await wait_for(lambda: not fwd.stats.hung, 10, "hung cleared")
    assert_once_each(sim, 20)


async def test_recovery_is_noticed_within_seconds_not_the_retry_cap(
        outbox: OutboxStore, sim: CmmsSimulator) -> None:
    await sim.go_down()
    await backlog(outbox, 10)
    async with forwarding(outbox, sim) as fwd:  # retry_max_seconds = 300
        await wait_for(lambda: fwd.stats.breaker is not BreakerState.CLOSED, 10, "breaker open")
        await asyncio.sleep(6.0)  # long enough for a record's own backoff to pass 6 s
        await sim.come_up()
        back = time.monotonic()
        await wait_for(lambda: len(sim.requests) == 10, 30, "delivered after the outage")
        took = time.monotonic() - back
        assert took < 3.0, f"recovery took {took:.1f} s"
        await wait_for(lambda: fwd.stats.breaker is BreakerState.CLOSED, 10, "breaker closed")
    assert_once_each(sim, 10)


async def test_quiesce_settles_what_is_in_flight_and_sends_nothing_more(
        outbox: OutboxStore, sim: CmmsSimulator) -> None:
    await backlog(outbox, 200)
    sim.faults.set("slow", delay_seconds=0.05)
    async with forwarding(outbox, sim, limits={"max_in_flight": 4,
                                               "max_requests_per_second": None}) as fwd:
        await wait_for(lambda: len(sim.requests) >= 8, 30, "the drain under way")
        fwd.quiesce()
        await asyncio.wait_for(fwd.idle.wait(), 10)
        sent = len(sim.arrivals)
        await asyncio.sleep(0.3)
        assert len(sim.arrivals) == sent  # nothing new after quiesce
    stats = await outbox.stats(time.time())
    assert stats.delivered["cmms"] == len(sim.requests)  # everything answered was settled
    assert stats.pending["cmms"] == 200 - len(sim.requests)
    # the records leased ahead were unmarked at the end: no unknown outcome to wait on
    rows = await outbox.lease("cmms", 300, time.time())
    assert all(r.unsettled_send_at is None for r in rows)
