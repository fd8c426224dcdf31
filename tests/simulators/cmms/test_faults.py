"""Fault injection and outages of the simulator, seen by a real client."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from simulators.cmms import CmmsSimulator
from tests.harness import port_open, wait_for
from tests.simulators.cmms.conftest import AUTH, REQUESTS, body, post

HEALTH = "/api/v1/health"


async def health(http: aiohttp.ClientSession, sim: CmmsSimulator) -> int:
    async with http.get(sim.url + HEALTH, headers=AUTH) as resp:
        return resp.status


async def test_slow_delays_then_answers(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.set("slow", count=1, delay_seconds=0.3)
    t0 = time.monotonic()
    assert await health(http, sim) == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert await health(http, sim) == 200
    assert time.monotonic() - t0 < 0.3  # the count ran out


async def test_error_5xx_for_n_requests(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.set("error_5xx", count=2, status=503)
    assert [await health(http, sim) for _ in range(3)] == [503, 503, 200]
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 201


async def test_error_until_cleared(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.set("error_5xx", status=500)
    status, headers, _ = await post(http, sim.url + REQUESTS, body())
    assert status == 500 and headers["Content-Type"] == "application/problem+json"
    assert [await health(http, sim) for _ in range(3)] == [500, 500, 500]
    sim.faults.clear()
    assert await health(http, sim) == 200
    assert sim.requests == [] and len(sim.idempotency) == 0  # a 5xx in front stores nothing


@pytest.mark.parametrize("retry_after", [7, "Wed, 21 Oct 2037 07:28:00 GMT"])
async def test_rate_429_has_retry_after(sim: CmmsSimulator, http: aiohttp.ClientSession,
                                        retry_after: int | str) -> None:
    sim.faults.set("rate_429", count=1, retry_after=retry_after)
    async with http.get(sim.url + HEALTH, headers=AUTH) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == str(retry_after)


async def test_drop_after_commit_commits_then_drops(sim: CmmsSimulator,
                                                    http: aiohttp.ClientSession) -> None:
    sim.faults.set("drop_after_commit", count=1)
    assert await health(http, sim) == 200  # GETs neither drop nor use up the count
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, sim.url + REQUESTS, body())
    assert len(sim.requests) == 1  # committed although the client saw nothing
    status, headers, doc = await post(http, sim.url + REQUESTS, body())
    assert status == 201 and headers["Idempotent-Replayed"] == "true"
    assert doc["id"] == sim.requests[0]["id"] and len(sim.requests) == 1
    assert sim.received[("POST", REQUESTS, 0)] == 1


async def test_hang_never_answers(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.set("hang", count=1)
    with pytest.raises(TimeoutError):
        async with http.get(sim.url + HEALTH, headers=AUTH,
                            timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert await health(http, sim) == 200


async def test_hang_is_released_by_go_down(http: aiohttp.ClientSession) -> None:
    sim = CmmsSimulator()
    await sim.start()
    sim.faults.set("hang")
    pending = asyncio.create_task(post(http, sim.url + REQUESTS, body()))
    await wait_for(lambda: sim.active_requests == 1, 2, "the request to hang in the server")
    t0 = time.monotonic()
    await sim.stop()
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert sim.requests == [] and sim.active_requests == 0
    assert sim.received[("POST", REQUESTS, 0)] == 1


async def test_go_down_come_up_keeps_port_and_data(sim: CmmsSimulator,
                                                   http: aiohttp.ClientSession) -> None:
    await post(http, sim.url + REQUESTS, body())
    port = sim.port
    await sim.go_down()
    assert not port_open(port)
    with pytest.raises(aiohttp.ClientConnectorError):
        await health(http, sim)
    await sim.come_up()
    assert sim.port == port and port_open(port)
    status, headers, doc = await post(http, sim.url + REQUESTS, body())
    assert status == 201 and headers["Idempotent-Replayed"] == "true" and doc["id"] == "MR-000001"
    assert (await post(http, sim.url + REQUESTS, body(), key="k-2"))[2]["id"] == "MR-000002"


def test_fault_arguments_are_checked() -> None:
    sim = CmmsSimulator()
    with pytest.raises(ValueError):
        sim.faults.set("explode")
    with pytest.raises(ValueError):
        sim.faults.set("error_5xx", status=42)
    with pytest.raises(ValueError):
        sim.faults.set("slow", count=-1)


async def test_token_bucket_rate_limit(http: aiohttp.ClientSession) -> None:
    now = [0.0]
    async with CmmsSimulator(rate_limit_per_second=2, rate_limit_burst=3,
                             clock=lambda: now[0]) as sim:
        assert [await health(http, sim) for _ in range(4)] == [200, 200, 200, 429]
        async with http.get(sim.url + HEALTH, headers=AUTH) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        now[0] += 0.5  # one token back
        assert [await health(http, sim) for _ in range(2)] == [200, 429]


async def test_match_body_refuses_only_the_matching_create(sim: CmmsSimulator,
                                                           http: aiohttp.ClientSession) -> None:
    """One episode's create answered 500 forever; other requests, GETs included, pass."""
    sim.faults.set("error_5xx", status=500, match_body="vibration")
    for _ in range(3):
        assert (await post(http, sim.url + REQUESTS, body()))[0] == 500
    other = body(title="Pump P-1 temperature high", dedup_key="PBOTHER")
    status, _, doc = await post(http, sim.url + REQUESTS, other, key="k-2")
    assert status == 201 and doc["title"] == "Pump P-1 temperature high"
    assert await health(http, sim) == 200
    assert [r["body"]["title"] for r in sim.requests] == ["Pump P-1 temperature high"]
    assert sim.faults.as_json()["match_body"] == "vibration"  # still armed: "forever"
    sim.faults.clear()
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 201


async def test_match_body_counts_only_matching_requests(sim: CmmsSimulator,
                                                        http: aiohttp.ClientSession) -> None:
    sim.faults.set("error_5xx", count=1, status=500, match_body="PBABCDEFGHIJKLMNOPQR")
    assert (await post(http, sim.url + REQUESTS, body(dedup_key="PBOTHER"), key="k-2"))[0] == 201
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 500
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 201  # the count ran out


async def test_match_body_over_the_control_api(sim: CmmsSimulator,
                                               http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/_sim/faults",
                         json={"mode": "error_5xx", "status": 500, "match_body": "P-1"}) as r:
        assert r.status == 200, await r.text()
    assert sim.faults.fault.match_body == "P-1"
    with pytest.raises(ValueError, match="match_body must not be empty"):
        sim.faults.set("error_5xx", match_body="")
