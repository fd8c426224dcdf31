"""The token bucket, the adaptive in-flight cap and the limits in each upstream's config."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.upstream.limits import (
    MAXIMO_LIMITS,
    SAP_PM_LIMITS,
    InFlightCap,
    TokenBucket,
    TotalTimeouts,
    UpstreamLimits,
    client_timeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    assert bucket.available() == 5
    bucket.take(5)
    assert bucket.available() == 0
    assert bucket.wait() == pytest.approx(0.1)
    clock.now += 0.35
    assert bucket.available() == 3
    clock.now += 100
    assert bucket.available() == 5  # never above the burst


def test_retry_after_pauses_the_whole_bucket_then_one_goes_alone() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock)
    bucket.pause(2.0)
    assert bucket.available() == 0 and bucket.wait() == pytest.approx(2.0)
    bucket.pause(0.5)  # a shorter pause never shortens a longer one
    assert bucket.paused_for == pytest.approx(2.0)
    clock.now += 2.0
    assert bucket.available() == 1


def test_an_unlimited_bucket_still_honours_a_pause() -> None:
    clock = Clock()
    bucket = TokenBucket(None, 1, clock)
    assert bucket.available() > 1000 and bucket.wait() == 0.0
    bucket.pause(1.0)
    assert bucket.available() == 0
    clock.now += 1.0
    assert bucket.available() > 1000


def test_adaptive_cap_grows_by_one_and_halves() -> None:
    cap = InFlightCap(8, adaptive=True)
    cap.overloaded()
    cap.overloaded()
    assert cap.current == 2
    cap.succeeded()
    assert cap.current == 2  # one success of a window of two
    cap.succeeded()
    assert cap.current == 3
    for _ in range(3 + 4 + 5 + 6 + 7 - 1):
        cap.succeeded()
    assert cap.current == 7
    cap.succeeded()
    assert cap.current == 8
    for _ in range(20):
        cap.succeeded()
    assert cap.current == 8  # never above the maximum
    for _ in range(10):
        cap.overloaded()
    assert cap.current == 1
    fixed = InFlightCap(8, adaptive=False)
    fixed.overloaded()
    assert fixed.current == 8


def test_limits_are_validated_and_have_per_upstream_defaults() -> None:
    with pytest.raises(ValidationError):
        UpstreamLimits(max_in_flight=0)
    with pytest.raises(ValidationError):
        UpstreamLimits.model_validate({"max_in_fligth": 3})  # a typo is an error
    assert (SAP_PM_LIMITS.max_requests_per_second, SAP_PM_LIMITS.max_in_flight) == (10.0, 4)
    assert (MAXIMO_LIMITS.max_requests_per_second, MAXIMO_LIMITS.max_in_flight) == (5.0, 4)


def test_client_timeout_caps_first_byte_at_total() -> None:
    t = client_timeout(1.0, 10.0, 2.0)
    assert (t.sock_connect, t.sock_read, t.total) == (1.0, 2.0, 2.0)


async def _held(totals: TotalTimeouts, until: asyncio.Future[None]) -> str:
    """A request under `totals` that lasts until `until` is done."""
    try:
        with totals.limit():
            await until
    except TimeoutError:
        return "timed out"
    return "answered"


async def test_total_timeouts_end_each_request_at_its_own_deadline() -> None:
    totals = TotalTimeouts(client_timeout(1.0, 10.0, 0.3))
    assert totals.timeout.total is None and totals.timeout.sock_read == 0.3  # aiohttp's part
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[None] = loop.create_future()
    # (a future each: cancelling a task cancels the future it waits on)
    first = asyncio.create_task(_held(totals, loop.create_future()))
    await asyncio.sleep(0.1)  # started apart: one timer serves both deadlines
    quick = asyncio.create_task(_held(totals, answer))
    second = asyncio.create_task(_held(totals, loop.create_future()))
    await asyncio.sleep(0)
    answer.set_result(None)  # answered well within its total
    async with asyncio.timeout(5):
        results = await asyncio.gather(first, quick, second)
    assert list(results) == ["timed out", "answered", "timed out"]
    assert not totals._due  # nothing left behind to cancel later


async def test_a_cancel_from_elsewhere_is_not_a_timeout() -> None:
    totals = TotalTimeouts(aiohttp.ClientTimeout(total=30))
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_held(totals, never))
    await asyncio.sleep(0)
    task.cancel()  # a stop, say: it must end the task, not read as the upstream's slowness
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not totals._due


async def test_a_cancel_at_the_deadline_still_cancels() -> None:
    """Our expiry and someone else's cancel together: theirs wins, as asyncio.timeout does."""
    totals = TotalTimeouts(aiohttp.ClientTimeout(total=0.05))
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_held(totals, never))
    await asyncio.sleep(0)
    [[limit]] = [list(totals._due)]
    limit.expire()  # the timer's cancel ...
    task.cancel()  # ... and a stop in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_total_means_no_deadline() -> None:
    totals = TotalTimeouts(aiohttp.ClientTimeout(total=None, sock_read=5))
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    assert await _held(totals, done) == "answered"
    assert totals._timer is None and not totals._due
