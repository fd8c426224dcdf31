"""BULK requests and `batcherror: 1` in the Maximo simulator."""

from __future__ import annotations

import aiohttp

from simulators.maximo import MaximoSimulator
from tests.simulators.maximo.conftest import KEY, sr


def coll(sim: MaximoSimulator) -> str:
    return f"{sim.url}/maximo/api/os/mxapisr"


async def test_bulk_creates_updates_and_reports_each_item(
        sim: MaximoSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(coll(sim), json=sr(), headers=KEY) as resp:
        href = resp.headers["Location"]
    items = [
        sr(externalrecid="B1"),
        sr(externalrecid="B2", reportedpriority=2),  # outside the domain 1, 3, 5
        {"_data": {"status": "RESOLVED"}, "_meta": {"uri": href, "method": "PATCH"}},
        {"_data": {}, "_meta": {"uri": coll(sim) + "/_nothere", "method": "PATCH"}},
    ]
    async with http.post(coll(sim), json=items, headers=KEY | {
            "x-method-override": "BULK", "properties": "ticketid"}) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert [a["_responsemeta"] for a in answer] == [
        {"_bulkid": "1", "status": 201}, {"_bulkid": "2", "status": 400},
        {"_bulkid": "3", "status": 204}, {"_bulkid": "4", "status": 404}]
    assert answer[0]["_responsedata"]["ticketid"] == "1002"
    assert answer[1]["_responsedata"]["Error"]["reasonCode"] == "BMXAA4021E"
    assert [t["externalrecid"] for t in sim.tickets] == ["PBAAAAAAAAAAAAAAAAAA", "B1"]
    assert sim.tickets[0]["status"] == "RESOLVED"


async def test_batcherror_lists_every_attribute_error(sim: MaximoSimulator,
                                                      http: aiohttp.ClientSession) -> None:
    bad = sr(reportedpriority=2, externalrecid="X" * 21, assetnum="NOPE")
    async with http.post(coll(sim), json=bad, headers=KEY | {"batcherror": "1"}) as resp:
        assert resp.status == 400
        err = (await resp.json())["Error"]
    names = {e["Error"]["errorattrname"]: e["Error"]["reasonCode"] for e in err["attrerrors"]}
    assert names == {"externalrecid": "BMXAA4049E", "reportedpriority": "BMXAA4021E",
                     "assetnum": "BMXAA2661E"}
    assert all(e["Error"]["statusCode"] == "400" for e in err["attrerrors"])
    async with http.post(coll(sim), json=bad, headers=KEY) as resp:
        assert "attrerrors" not in (await resp.json())["Error"]  # only the first, by default
