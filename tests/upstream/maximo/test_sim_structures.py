"""The Maximo simulator's work orders, inventory, reservations and requisitions, over HTTP.

The simulator implements what the shared doc says of Maximo, not what the adapter assumes:
these tests talk to it with plain aiohttp, not through the sink.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from simulators.maximo import MaximoSimulator

KEY = {"apikey": "test-key"}


async def call(sim: MaximoSimulator, method: str, path: str, *, json: Any = None,
               headers: dict[str, str] | None = None, params: dict[str, str] | None = None
               ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(
            method, f"{sim.url}/maximo/api/os/{path}", json=json,
            params={"lean": "1", **(params or {})}, headers=KEY | (headers or {})) as r:
        body = await r.read()
        return r.status, (await r.json() if body else None)


async def test_work_orders_query_by_asset_and_open_status(maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="BEARING")
    maximo.plant_work_order("PUMP-1", status="COMP", failurecode="BEARING")
    maximo.plant_work_order("FAN-1", status="INPRG")
    status, doc = await call(maximo, "GET", "mxapiwodetail", params={
        "oslc.where": 'assetnum="PUMP-1" and siteid="BEDFORD" and status in ["WAPPR","APPR"]',
        "oslc.select": "wonum,status,failurecode,worklog{description}"})
    assert status == 200
    [found] = doc["member"]
    assert (found["wonum"], found["status"], found["failurecode"]) == (
        wo["wonum"], "APPR", "BEARING")
    assert found["_rowstamp"] and found["href"].endswith(
        maximo.tables["mxapiwodetail"].restid(wo))


async def test_work_order_worklog_merge_status_lifecycle_and_rowstamp(
        maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="INPRG")
    href = maximo.tables["mxapiwodetail"].restid(wo)
    note = {"worklog": [{"description": "seen by PlantBridge"}]}
    stale = {"x-method-override": "PATCH", "patchtype": "MERGE", "if-match": "1"}
    status, doc = await call(maximo, "POST", f"mxapiwodetail/{href}", json=note, headers=stale)
    assert status == 412 and doc["Error"]["reasonCode"] == "BMXAA8229W"
    merge = {"x-method-override": "PATCH", "patchtype": "MERGE", "if-match": wo["_rowstamp"]}
    status, _ = await call(maximo, "POST", f"mxapiwodetail/{href}", json=note, headers=merge)
    assert status == 204
    await call(maximo, "POST", f"mxapiwodetail/{href}", json=note, headers={
        "x-method-override": "PATCH", "patchtype": "MERGE"})
    assert [w["description"] for w in wo["worklog"]] == ["seen by PlantBridge"] * 2
    maximo.set_wo_status(wo["wonum"], "CLOSE")
    status, doc = await call(maximo, "POST", f"mxapiwodetail/{href}", json={"status": "INPRG"},
                             headers={"x-method-override": "PATCH"})
    assert status == 400 and "CLOSE" in doc["Error"]["message"]


async def test_work_order_create_validates_the_asset(maximo: MaximoSimulator) -> None:
    status, doc = await call(maximo, "POST", "mxapiwodetail",
                             json={"assetnum": "PUMP-1", "siteid": "NASHUA"})
    assert status == 400 and "PUMP-1" in doc["Error"]["message"]
    status, _ = await call(maximo, "POST", "mxapiwodetail",
                           json={"assetnum": "PUMP-1", "siteid": "BEDFORD"})
    assert status == 201 and maximo.work_orders[-1]["status"] == "WAPPR"


async def test_inventory_reservations_and_requisitions(maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 3)
    status, doc = await call(maximo, "GET", "mxapiinventory", params={
        "oslc.where": 'itemnum="BRG-6205" and location="CENTRAL" and siteid="BEDFORD"',
        "oslc.select": "itemnum,curbal"})
    assert status == 200 and [m["curbal"] for m in doc["member"]] == [3]
    status, _ = await call(maximo, "POST", "mxapiinventory", json={"itemnum": "X"})
    assert status == 400  # inventory is read only here
    res = {"itemnum": "BRG-6205", "location": "CENTRAL", "storelocsiteid": "BEDFORD",
           "reservedqty": 2, "requestnum": "PBKEY", "assetnum": "PUMP-1"}
    for _ in range(2):  # no dedup: the same POST twice is two reservations
        status, _ = await call(maximo, "POST", "mxapiinvres", json=res)
        assert status == 201
    assert len(maximo.reservations) == 2
    status, doc = await call(maximo, "POST", "mxapiinvres", json=res | {"itemnum": "NOPE"})
    assert status == 400 and "not stocked" in doc["Error"]["message"]
    status, doc = await call(maximo, "POST", "mxapiinvres", json=res | {"reservedqty": 0})
    assert status == 400
    status, doc = await call(maximo, "POST", "mxapiinvres", json=res | {"wonum": "777"})
    assert status == 400 and "777" in doc["Error"]["message"]
    status, doc = await call(maximo, "POST", "mxapipr", headers={"properties": "prnum,status"},
                             json={"siteid": "BEDFORD", "externalrefid": "PBKEY", "prline": [
                                 {"itemnum": "BRG-6205", "orderqty": 3, "storeloc": "CENTRAL"}]})
    assert status == 201 and doc["status"] == "WAPPR"
    [pr] = maximo.requisitions
    assert pr["prline"][0]["orderqty"] == 3 and pr["prnum"] == doc["prnum"]
    status, _ = await call(maximo, "POST", "mxapipr", json={"siteid": "BEDFORD", "prline": []})
    assert status == 400
