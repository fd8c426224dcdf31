"""Fault injection of the Maximo simulator, outage and restart on the same port, the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from simulators.maximo import MaximoSimulator
from tests.harness import free_port, port_open, wait_for, wait_for_sync
from tests.simulators.maximo.conftest import KEY, sr

ROOT = Path(__file__).resolve().parents[3]


def coll(sim: MaximoSimulator) -> str:
    return f"{sim.url}/maximo/api/os/mxapisr"


async def test_error_5xx_for_count_requests_then_normal(sim: MaximoSimulator,
                                                        http: aiohttp.ClientSession) -> None:
    sim.faults.set("error_5xx", count=2, status=502)
    for _ in range(2):
        async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
            assert resp.status == 502
            assert (await resp.json())["Error"]["statusCode"] == "502"
    assert sim.tickets == []  # answered before anything was done
    async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
        assert resp.status == 201
    assert sim.faults.mode == "none"


async def test_rate_429_carries_retry_after(sim: MaximoSimulator,
                                            http: aiohttp.ClientSession) -> None:
    sim.faults.set("rate_429", count=1, retry_after=7)
    async with http.get(coll(sim), headers=KEY) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "7"
    async with http.get(coll(sim), headers=KEY) as resp:
        assert resp.status == 200


async def test_drop_after_commit_commits_then_drops(sim: MaximoSimulator,
                                                    http: aiohttp.ClientSession) -> None:
    sim.faults.set("drop_after_commit", count=1)
    async with http.get(coll(sim), headers=KEY) as resp:  # reads do not use the fault up
        assert resp.status == 200
    with pytest.raises(aiohttp.ClientError):
        async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
            await resp.read()
    assert len(sim.tickets) == 1  # committed although the client saw no answer
    assert sim.count("POST", "/os/mxapisr", 0) == 1
    async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
        assert resp.status == 201


async def test_slow_commits_after_the_client_gave_up(sim: MaximoSimulator) -> None:
    sim.faults.set("slow", count=1, delay_seconds=0.6)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as http:
        with pytest.raises(TimeoutError):
            async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
                await resp.read()
    assert sim.tickets == []
    await wait_for(lambda: len(sim.tickets) == 1, 5, "the slow create to commit")


async def test_conflict_412_makes_the_next_member_update_stale(
        sim: MaximoSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
        href = resp.headers["Location"]
    sim.faults.set("conflict_412", count=1)
    rowstamp = sim.tickets[0]["_rowstamp"]
    patch = KEY | {"x-method-override": "PATCH", "if-match": rowstamp}
    async with http.post(href, json={"status": "RESOLVED"}, headers=patch) as resp:
        assert resp.status == 412
    fresh = KEY | {"x-method-override": "PATCH", "if-match": sim.tickets[0]["_rowstamp"]}
    async with http.post(href, json={"status": "RESOLVED"}, headers=fresh) as resp:
        assert resp.status == 204
    assert sim.tickets[0]["status"] == "RESOLVED"


async def test_go_down_and_come_up_keep_port_and_data(sim: MaximoSimulator,
                                                      http: aiohttp.ClientSession) -> None:
    async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
        assert resp.status == 201
    port = sim.port
    await sim.go_down()
    assert not port_open(port)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(coll(sim), headers=KEY):
            pass
    await sim.come_up()
    assert sim.port == port
    async with http.get(coll(sim), params={"oslc.select": "ticketid"}, headers=KEY) as resp:
        assert [m["ticketid"] for m in (await resp.json())["member"]] == ["1001"]


async def test_faults_over_the_control_endpoint(sim: MaximoSimulator,
                                                http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/_sim/faults", json={"mode": "error_5xx", "count": 1}):
        pass
    assert sim.faults.mode == "error_5xx"
    async with http.post(f"{sim.url}/_sim/faults", json={"mode": "bogus"}) as resp:
        assert resp.status == 400
    async with http.get(f"{sim.url}/_sim/state") as resp:
        assert (await resp.json())["faults"]["remaining"] == 1


def test_cli_serves_until_sigterm() -> None:
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "simulators.maximo", "--port", str(port),
                             "--api-key", "k1", "--asset", "TANK-7@SITE2",
                             "--priority-domain", "1,3"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_sync(lambda: port_open(port), 15, "the simulator CLI to listen")

        async def probe() -> tuple[int, int]:
            url = f"http://127.0.0.1:{port}/maximo/api/os/mxapisr"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=sr(assetnum="TANK-7", siteid="SITE2",
                                                  reportedpriority=3),
                                     headers={"apikey": "k1"}) as ok:
                    pass
                async with http.post(url, json=sr(assetnum="TANK-7", siteid="SITE2",
                                                  reportedpriority=2),
                                     headers={"apikey": "k1"}) as bad:
                    pass
            return ok.status, bad.status

        assert asyncio.run(probe()) == (201, 400)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
