"""Fault switches, restarts on the same port, and the command line of the SAP PM simulator."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson
import pytest

from simulators.sap_pm import SERVICE_PATH, Faults, SapPmSimulator
from tests.harness import free_port
from tests.simulators.sap_pm.conftest import AUTH, Client, payload


async def test_error_5xx_for_count_requests_then_normal(sim: SapPmSimulator,
                                                        client: Client) -> None:
    sim.faults.set("error_5xx", count=2, status=503, retry_after=7)
    for _ in range(2):
        status, headers, doc = await client.call("POST", "/MaintenanceNotification", payload())
        assert (status, headers["Retry-After"]) == (503, "7")
        assert "503" in doc["error"]["message"]["value"]
    assert sim.notifications == []
    await client.create()
    assert sim.received[("POST", "MaintenanceNotification", 503)] == 2
    assert sim.received[("POST", "MaintenanceNotification", 201)] == 1


async def test_rate_429_carries_retry_after(sim: SapPmSimulator, client: Client) -> None:
    sim.faults.set("rate_429", count=1, retry_after="Wed, 21 Oct 2026 07:28:00 GMT")
    status, headers, _ = await client.call("GET", "/MaintenanceNotification")
    assert (status, headers["Retry-After"]) == (429, "Wed, 21 Oct 2026 07:28:00 GMT")
    status, _, _ = await client.call("GET", "/MaintenanceNotification")
    assert status == 200


async def test_drop_after_commit_commits_then_drops(sim: SapPmSimulator, client: Client) -> None:
    sim.faults.set("drop_after_commit", count=1)
    status, _, _ = await client.call("GET", "/MaintenanceNotification")  # reads pass, uncounted
    assert status == 200
    with pytest.raises(aiohttp.ClientError):
        await client.call("POST", "/MaintenanceNotification", payload())
    assert len(sim.notifications) == 1  # committed although the client heard nothing
    assert sim.received[("POST", "MaintenanceNotification", 0)] == 1
    await client.create()  # the fault is used up; a repeated POST is a duplicate
    assert len(sim.notifications) == 2


async def test_expire_session_forces_a_csrf_403_on_the_next_write(sim: SapPmSimulator,
                                                                  client: Client) -> None:
    sim.faults.set("expire_session", count=1)
    status, headers, _ = await client.call("POST", "/MaintenanceNotification", payload())
    assert (status, headers["x-csrf-token"]) == (403, "Required")
    await client.fetch()
    await client.create()
    assert len(sim.notifications) == 1


async def test_slow_delays_the_answer(sim: SapPmSimulator, client: Client) -> None:
    sim.faults.set("slow", count=1, delay_seconds=0.3)
    started = time.monotonic()
    status, _, _ = await client.call("GET", "/MaintenanceNotification")
    assert status == 200
    assert time.monotonic() - started >= 0.3


def test_fault_arguments_are_checked() -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.set("melt")
    with pytest.raises(ValueError):
        faults.set("error_5xx", status=99)
    with pytest.raises(ValueError):
        faults.set_from_json({"mode": "slow", "colour": "red"})
    faults.set_from_json({"mode": "rate_429", "count": 1})
    assert faults.as_json()["mode"] == "rate_429"
    faults.set("error_5xx", count=1, methods=["post"])
    assert faults.take("GET") is None  # not for GETs, and not counted
    assert faults.take("POST") is not None
    assert faults.take("POST") is None
    faults.set("drop_after_commit")
    assert faults.take("GET") is None and faults.take("PATCH") is not None


async def test_faults_and_state_over_http(sim: SapPmSimulator, client: Client,
                                          http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/_sim/faults",
                         data=orjson.dumps({"mode": "error_5xx", "count": 1, "status": 500})):
        pass
    status, _, _ = await client.call("GET", "/MaintenanceNotification")
    assert status == 500
    await client.create()
    async with http.get(sim.url + "/_sim/state") as resp:
        state = await resp.json()
    assert [n["MaintenanceNotification"] for n in state["notifications"]] == ["10000020"]
    assert state["faults"]["mode"] == "none"


async def test_go_down_and_come_up_keep_port_and_data(sim: SapPmSimulator,
                                                      client: Client) -> None:
    await client.create()
    port = sim.port
    await sim.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.call("GET", "/MaintenanceNotification")
    await sim.come_up()
    assert sim.port == port
    await client.create()  # the session survived too
    assert [n["MaintenanceNotification"] for n in sim.notifications] == ["10000020", "10000021"]


async def test_cli_serves_until_terminated() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.sap_pm", "--port", str(port),
        "--equipment", "4711", "--equipment", "FL-1=EAMS_FL",
        stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"127.0.0.1:{port}{SERVICE_PATH}" in line.decode()
        async with aiohttp.ClientSession(headers=AUTH,
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            sim = SapPmSimulator(port=port)  # only for its url; never started
            c = Client(sim, http)
            await c.fetch()
            d = await c.create(TechnicalObject="4711")
            assert d["TechnicalObject"] == "000000000000004711"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
