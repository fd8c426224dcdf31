"""Idempotency-Key semantics of the simulator (IETF draft and Stripe variant), over real HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from simulators.cmms import CmmsSimulator
from simulators.cmms.idempotency import BadIdempotencyKey, parse_key
from tests.harness import wait_for
from tests.simulators.cmms.conftest import AUTH, REQUESTS, body, post


async def test_create_returns_201_location_and_id(sim: CmmsSimulator,
                                                  http: aiohttp.ClientSession) -> None:
    status, headers, doc = await post(http, sim.url + REQUESTS, body())
    assert status == 201
    assert doc["id"] == "MR-000001" and doc["status"] == "open"
    assert headers["Location"] == f"{REQUESTS}/MR-000001"
    assert "Idempotent-Replayed" not in headers
    assert sim.requests[0]["idempotency_key"] == "k-1"
    assert sim.requests[0]["external_ref"] == "PBABCDEFGHIJKLMNOPQR"


async def test_replay_returns_stored_response_and_creates_nothing(
        sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    first = await post(http, sim.url + REQUESTS, body())
    again = await post(http, sim.url + REQUESTS, body())
    assert again[0] == 201 and again[2] == first[2]
    assert again[1]["Idempotent-Replayed"] == "true"
    assert len(sim.requests) == 1
    other = await post(http, sim.url + REQUESTS, body(), key="k-2")
    assert other[2]["id"] == "MR-000002"


async def test_missing_or_malformed_key_is_400(sim: CmmsSimulator,
                                               http: aiohttp.ClientSession) -> None:
    status, headers, doc = await post(http, sim.url + REQUESTS, body(), key=None)
    assert status == 400 and headers["Content-Type"] == "application/problem+json"
    assert "Idempotency-Key" in doc["detail"]
    status, _, _ = await post(http, sim.url + REQUESTS, body(), key=None,
                              headers=AUTH | {"Idempotency-Key": '"open'})
    assert status == 400
    assert sim.requests == []


@pytest.mark.parametrize(("mode", "expected"), [("ietf", 422), ("stripe", 400)])
async def test_same_key_different_body(mode: str, expected: int,
                                       http: aiohttp.ClientSession) -> None:
    async with CmmsSimulator(idempotency_mode=mode) as sim:  # type: ignore[arg-type]
        assert (await post(http, sim.url + REQUESTS, body()))[0] == 201
        status, _, doc = await post(http, sim.url + REQUESTS, body(title="something else"))
        assert status == expected
        if mode == "stripe":
            assert doc["error"]["type"] == "idempotency_error"
        assert len(sim.requests) == 1


async def test_concurrent_same_key_is_409_while_in_flight(
        sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.set("slow", count=1, delay_seconds=0.5)
    first = asyncio.create_task(post(http, sim.url + REQUESTS, body()))
    await wait_for(lambda: len(sim.idempotency) == 1, 5, "first request in flight")
    status, headers, doc = await post(http, sim.url + REQUESTS, body())
    assert status == 409 and headers["Retry-After"] == "1"
    assert doc["status"] == 409
    assert (await first)[0] == 201
    replay = await post(http, sim.url + REQUESTS, body())
    assert replay[1]["Idempotent-Replayed"] == "true"
    assert len(sim.requests) == 1


async def test_keys_expire_after_ttl(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    async with CmmsSimulator(key_ttl_seconds=60, clock=lambda: now[0]) as sim:
        await post(http, sim.url + REQUESTS, body())
        now[0] += 59
        assert (await post(http, sim.url + REQUESTS, body()))[1].get("Idempotent-Replayed")
        now[0] += 2  # 61 s after completion
        status, headers, doc = await post(http, sim.url + REQUESTS, body(title="new intent"))
        assert status == 201 and "Idempotent-Replayed" not in headers
        assert doc["id"] == "MR-000002"


async def test_keys_are_scoped_per_path(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    _, _, doc = await post(http, sim.url + REQUESTS, body())
    url = f"{sim.url}{REQUESTS}/{doc['id']}/status-updates"
    status, _, _ = await post(http, url, b'{"status": "cleared"}')  # same key "k-1"
    assert status == 201


async def test_ietf_stores_validation_errors_stripe_does_not(
        http: aiohttp.ClientSession) -> None:
    for mode, then in (("ietf", "idempotency-key-reused"), ("stripe", None)):
        async with CmmsSimulator(idempotency_mode=mode) as sim:  # type: ignore[arg-type]
            status, _, doc = await post(http, sim.url + REQUESTS, body(title=None))
            assert status == 422 and doc["errors"][0]["field"] == "title"
            replay = await post(http, sim.url + REQUESTS, body(title=None))
            assert replay[0] == 422
            assert ("Idempotent-Replayed" in replay[1]) is (mode == "ietf")
            # A fixed body under the same key: a mismatch in IETF mode (the error is stored),
            # a fresh request in Stripe mode (validation failures are not stored).
            again = await post(http, sim.url + REQUESTS, body())
            if then is None:
                assert again[0] == 201
            else:
                assert again[0] == 422 and again[2]["type"].endswith(then)


def test_parse_key_accepts_sf_string_and_token() -> None:
    assert parse_key('"abc"') == "abc"
    assert parse_key('"a\\"b\\\\c"') == 'a"b\\c'
    assert parse_key("plain-token") == "plain-token"
    for bad in (None, "", '"', '"abc', '"a"b', '"a\\x"', '""', '"' + "x" * 256 + '"'):
        with pytest.raises(BadIdempotencyKey):
            parse_key(bad)
