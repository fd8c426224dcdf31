"""The SAP simulator's OAuth2 token endpoint and its technical objects (API_EQUIPMENT,
API_FUNCTIONALLOCATION), spoken to with plain HTTP: strict where the shared doc is documented
(client credentials in a Basic header, grant_type in a form; composite equipment key, so a
$filter, and a functional location read by key), and a fake clock for token expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulators.sap_pm import SERVICE_PATH, SapPmSimulator
from simulators.sap_pm.masterdata import EQUIPMENT_PATH, FLOC_PATH
from simulators.sap_pm.oauth import TOKEN_PATH
from tests.simulators.sap_pm.conftest import AUTH, FakeClock

CLIENT = aiohttp.encode_basic_auth("PB_CLIENT", "s3cret")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def osim(clock: FakeClock) -> AsyncIterator[SapPmSimulator]:
    s = SapPmSimulator(oauth_clients={"PB_CLIENT": "s3cret"}, token_lifetime_seconds=5,
                       clock=clock)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def token(http: aiohttp.ClientSession, sim: SapPmSimulator, auth: str = CLIENT,
                body: str = "grant_type=client_credentials&scope=X",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.post(sim.url + TOKEN_PATH, params={"sap-client": "100"}, data=body,
                         headers={"Authorization": auth, **FORM, **(headers or {})}) as resp:
        return resp.status, await resp.json()


async def test_tokens_are_issued_to_known_clients_and_expire(
        osim: SapPmSimulator, clock: FakeClock) -> None:
    async with aiohttp.ClientSession() as http:
        status, doc = await token(http, osim)
        assert status == 200
        assert doc["token_type"] == "Bearer" and doc["expires_in"] == 5
        bearer = {"Authorization": f"Bearer {doc['access_token']}"}
        url = osim.url + SERVICE_PATH + "/MaintenanceNotification"
        async with http.get(url, headers=bearer) as resp:
            assert resp.status == 200
        clock.now += 5
        async with http.get(url, headers=bearer) as resp:
            assert resp.status == 401  # expired
        assert (await token(http, osim, aiohttp.encode_basic_auth("PB_CLIENT", "no")))[1][
            "error"] == "invalid_client"


async def test_the_token_endpoint_is_strict_about_the_documented_parts(
        osim: SapPmSimulator) -> None:
    async with aiohttp.ClientSession() as http:
        status, doc = await token(http, osim, auth="",
                                  body="grant_type=client_credentials&client_id=PB_CLIENT&"
                                       "client_secret=s3cret")
        assert (status, doc["error"]) == (401, "invalid_client")  # credentials in Basic only
        status, doc = await token(http, osim, body="grant_type=password")
        assert (status, doc["error"]) == (400, "unsupported_grant_type")


async def test_equipment_is_found_by_filter_and_flocs_by_key(osim: SapPmSimulator) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        url = osim.url + EQUIPMENT_PATH + "/Equipment"
        params = {"$filter": "Equipment eq '210100094'", "sap-client": "100"}
        async with http.get(url, params=params) as resp:
            found = (await resp.json())["d"]["results"]
        assert [e["EquipmentName"] for e in found] == ["Cooling water pump 1"]
        assert "ValidityEndDate" in found[0]  # part of the composite key
        params["$filter"] = "Equipment eq '000000000210100094'"  # no conversion exit [U]
        async with http.get(url, params=params) as resp:
            assert (await resp.json())["d"]["results"] == []
        floc = osim.url + FLOC_PATH + "/FunctionalLocation('1010-CWS-WCS-CWCP1')"
        async with http.get(floc) as resp:
            assert (await resp.json())["d"]["FunctionalLocationName"] == \
                "Cooling water pump station 1"
        async with http.get(osim.url + FLOC_PATH + "/FunctionalLocation('NOPE')") as resp:
            assert resp.status == 404
            assert "NOPE" in (await resp.json())["error"]["message"]["value"]
        async with http.get(osim.url + EQUIPMENT_PATH + "/Equipment") as resp:
            assert resp.status == 200
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as resp:
            assert resp.status == 401  # the same logon as the notification service
