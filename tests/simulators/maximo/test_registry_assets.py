"""The Maximo simulator's `mxapiasset`: queried by assetnum + siteid from its own seeded site,
read only."""

from __future__ import annotations

import aiohttp

from simulators.maximo import MaximoSimulator
from tests.simulators.maximo.conftest import KEY


async def test_assets_are_queried_by_assetnum_and_siteid() -> None:
    async with MaximoSimulator() as sim, aiohttp.ClientSession(headers=KEY) as http:
        url = sim.url + "/maximo/api/os/mxapiasset"
        where = 'assetnum="PUMP-1" and siteid="BEDFORD"'
        async with http.get(url, params={"lean": "1", "oslc.where": where,
                                         "oslc.select": "assetnum,location,status"}) as resp:
            assert resp.status == 200
            member = (await resp.json())["member"]
        assert [(m["assetnum"], m["location"], m["status"]) for m in member] == [
            ("PUMP-1", "BR430", "OPERATING")]
        where = 'assetnum="PUMP-1" and siteid="NASHUA"'
        async with http.get(url, params={"oslc.where": where}) as resp:
            assert (await resp.json())["member"] == []
        async with http.get(url, params={"oslc.where": 'color="red"'}) as resp:
            assert resp.status == 400  # unknown attribute
        async with http.post(url, json={"assetnum": "NEW-1"}) as resp:
            assert resp.status == 400  # read only: no asset is created
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as resp:
            assert resp.status == 401
