"""The Maximo simulator over real sockets: auth, create, query, update, validation."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from simulators.maximo import MaximoSimulator
from tests.simulators.maximo.conftest import KEY, sr


def coll(sim: MaximoSimulator) -> str:
    return f"{sim.url}/maximo/api/os/mxapisr"


async def create(http: aiohttp.ClientSession, sim: MaximoSimulator, body: dict[str, Any],
                 **headers: str) -> aiohttp.ClientResponse:
    async with http.post(coll(sim), params={"lean": "1"}, json=body,
                         headers=KEY | headers) as resp:
        await resp.read()
        return resp


async def query(http: aiohttp.ClientSession, sim: MaximoSimulator, **params: str
                ) -> dict[str, Any]:
    async with http.get(coll(sim), params={"lean": "1"} | params, headers=KEY) as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
        return doc


@pytest.mark.parametrize("headers,params", [({}, {}), ({"apikey": "wrong"}, {}),
                                            ({}, {"apikey": "wrong"})])
async def test_without_a_good_key_401_with_the_error_json(
        sim: MaximoSimulator, http: aiohttp.ClientSession, headers: dict[str, str],
        params: dict[str, str]) -> None:
    async with http.get(coll(sim), headers=headers, params=params) as resp:
        assert resp.status == 401
        err = (await resp.json())["Error"]
    assert err["reasonCode"] == "BMXAA7901E"
    assert err["statusCode"] == "401"  # a string, as Maximo sends it
    assert err["message"].startswith("BMXAA7901E - ")
    assert err["extendedError"]["moreInfo"]["href"].endswith("/BMXAA7901E")
    assert sim.count("GET", "/os/mxapisr", 401) == 1


async def test_the_key_may_come_as_a_query_parameter(sim: MaximoSimulator,
                                                     http: aiohttp.ClientSession) -> None:
    async with http.get(coll(sim), params={"apikey": "test-key", "lean": "1"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["member"] == []


async def test_maxauth_header_when_users_are_configured(http: aiohttp.ClientSession) -> None:
    async with MaximoSimulator(maxauth_users={"wilson": "wilson"},
                               api_root="/maximo/oslc") as sim:
        url = f"{sim.url}/maximo/oslc/os/mxapisr"
        good = base64.b64encode(b"wilson:wilson").decode()
        bad = base64.b64encode(b"wilson:nope").decode()
        async with http.get(url, headers={"maxauth": good}, params={"lean": "1"}) as resp:
            assert resp.status == 200
        async with http.get(url, headers={"maxauth": bad}) as resp:
            assert resp.status == 401


async def test_create_without_properties_has_only_a_location(
        sim: MaximoSimulator, http: aiohttp.ClientSession) -> None:
    resp = await create(http, sim, sr())
    assert resp.status == 201
    assert resp.content_length in (0, None)
    location = resp.headers["Location"]
    assert location.startswith(coll(sim) + "/_")
    async with http.get(location, params={"lean": "1"}, headers=KEY) as got:
        doc = await got.json()
        assert got.headers["ETag"] == doc["_rowstamp"]
    assert doc["ticketid"] == "1001" and doc["status"] == "NEW" and doc["class"] == "SR"
    assert doc["href"] == location and doc["externalrecid"] == "PBAAAAAAAAAAAAAAAAAA"


async def test_create_with_properties_returns_those(sim: MaximoSimulator,
                                                    http: aiohttp.ClientSession) -> None:
    async with http.post(coll(sim), params={"lean": "1"}, json=sr(),
                         headers=KEY | {"properties": "ticketid,status"}) as resp:
        assert resp.status == 201
        doc = await resp.json()
    assert doc["ticketid"] == "1001" and doc["status"] == "NEW"
    assert "description" not in doc and doc["href"] == resp.headers["Location"]


async def test_a_repeated_post_creates_a_duplicate(sim: MaximoSimulator,
                                                   http: aiohttp.ClientSession) -> None:
    for _ in range(2):
        assert (await create(http, sim, sr())).status == 201
    assert [t["ticketid"] for t in sim.tickets] == ["1001", "1002"]
    doc = await query(http, sim, **{"oslc.where": 'externalrecid="PBAAAAAAAAAAAAAAAAAA"',
                                    "oslc.select": "ticketid"})
    assert [m["ticketid"] for m in doc["member"]] == ["1001", "1002"]


async def test_where_select_order_and_paging(sim: MaximoSimulator,
                                             http: aiohttp.ClientSession) -> None:
    for i, (asset, site) in enumerate([("PUMP-1", "BEDFORD"), ("FAN-1", "BEDFORD"),
                                       ("MIX-9", "NASHUA"), ("PUMP-1", "BEDFORD")]):
        assert (await create(http, sim, sr(assetnum=asset, siteid=site,
                                           externalrecid=f"K{i}"))).status == 201
    doc = await query(http, sim, **{"oslc.where": 'assetnum="PUMP-1" and siteid="BEDFORD"',
                                    "oslc.select": "ticketid,assetnum"})
    assert [(m["ticketid"], m["assetnum"]) for m in doc["member"]] == [
        ("1001", "PUMP-1"), ("1004", "PUMP-1")]
    assert set(doc["member"][0]) == {"ticketid", "assetnum", "href", "_rowstamp"}

    doc = await query(http, sim, **{"oslc.where": 'siteid in ["BEDFORD","NASHUA"] and '
                                                  'externalrecid!="K1"',
                                    "oslc.select": "ticketid", "oslc.orderBy": "-ticketid"})
    assert [m["ticketid"] for m in doc["member"]] == ["1004", "1003", "1001"]

    doc = await query(http, sim, **{"oslc.select": "ticketid", "oslc.orderBy": "+ticketid",
                                    "oslc.pageSize": "3", "collectioncount": "1"})
    assert [m["ticketid"] for m in doc["member"]] == ["1001", "1002", "1003"]
    assert doc["responseInfo"]["totalCount"] == 4 and doc["responseInfo"]["pagenum"] == 1
    async with http.get(doc["responseInfo"]["nextPage"]["href"], headers=KEY) as resp:
        page2 = await resp.json()
    assert [m["ticketid"] for m in page2["member"]] == ["1004"]
    assert "nextPage" not in page2["responseInfo"] and "previousPage" in page2["responseInfo"]

    doc = await query(http, sim, **{"oslc.where": 'description="%VIBRATION%"'})
    assert len(doc["member"]) == 4 and set(doc["member"][0]) == {"href"}  # no select: hrefs


@pytest.mark.parametrize("where", ['nosuchfield="x"', 'siteid="A" or siteid="B"',
                                   'siteid=', 'siteid in ["A"'])
async def test_a_bad_where_is_a_400(sim: MaximoSimulator, http: aiohttp.ClientSession,
                                    where: str) -> None:
    async with http.get(coll(sim), params={"oslc.where": where}, headers=KEY) as resp:
        assert resp.status == 400
        assert (await resp.json())["Error"]["statusCode"] == "400"


async def test_non_lean_json_is_namespaced(sim: MaximoSimulator,
                                           http: aiohttp.ClientSession) -> None:
    await create(http, sim, sr())
    async with http.get(coll(sim), params={"lean": "0", "oslc.select": "ticketid"},
                        headers=KEY) as resp:
        doc = await resp.json()
    assert doc["rdfs:member"][0]["spi:ticketid"] == "1001"
    assert "rdf:about" in doc["rdfs:member"][0]


async def patch(http: aiohttp.ClientSession, href: str, body: dict[str, Any],
                **headers: str) -> tuple[int, dict[str, Any] | None]:
    async with http.post(href, params={"lean": "1"}, json=body,
                         headers=KEY | {"x-method-override": "PATCH"} | headers) as resp:
        doc = await resp.json() if resp.status != 204 else None
        return resp.status, doc


async def test_patch_through_the_override_and_status_transitions(
        sim: MaximoSimulator, http: aiohttp.ClientSession) -> None:
    href = (await create(http, sim, sr())).headers["Location"]
    assert await patch(http, href, {"status": "QUEUED"}) == (204, None)
    status, doc = await patch(http, href, {"status": "RESOLVED"}, properties="status")
    assert status == 200 and doc is not None and doc["status"] == "RESOLVED"
    status, doc = await patch(http, href, {"status": "NEW"})
    assert status == 400 and doc is not None
    assert "cannot be changed from RESOLVED to NEW" in doc["Error"]["message"]
    assert (await patch(http, href, {"status": "CLOSED"}))[0] == 204
    status, doc = await patch(http, href, {"status": "INPROG"})
    assert status == 400 and sim.tickets[0]["status"] == "CLOSED"
    async with http.post(href, json={"status": "QUEUED"}, headers=KEY) as resp:
        assert resp.status == 400  # a member POST without the override is no update


async def test_worklog_merge_adds_plain_patch_replaces(sim: MaximoSimulator,
                                                      http: aiohttp.ClientSession) -> None:
    href = (await create(http, sim, sr())).headers["Location"]
    for text in ("first", "second"):
        status, _ = await patch(http, href, {"worklog": [{"description": text}]},
                                patchtype="MERGE")
        assert status == 204
    assert [w["description"] for w in sim.tickets[0]["worklog"]] == ["first", "second"]
    await patch(http, href, {"worklog": [{"description": "only"}]})
    assert [w["description"] for w in sim.tickets[0]["worklog"]] == ["only"]
    async with http.get(href, params={"oslc.select": "ticketid,worklog{description}"},
                        headers=KEY) as resp:
        doc = await resp.json()
    assert doc["worklog"] == [{"description": "only"}]


async def test_a_stale_rowstamp_is_a_412(sim: MaximoSimulator,
                                         http: aiohttp.ClientSession) -> None:
    href = (await create(http, sim, sr())).headers["Location"]
    old = sim.tickets[0]["_rowstamp"]
    assert (await patch(http, href, {"description": "changed"}, **{"if-match": old}))[0] == 204
    status, doc = await patch(http, href, {"status": "RESOLVED"}, **{"if-match": old})
    assert status == 412 and doc is not None
    assert doc["Error"]["reasonCode"] == "BMXAA8229W" and doc["Error"]["statusCode"] == "412"
    status, _ = await patch(http, href, {"status": "RESOLVED", "_rowstamp": old})
    assert status == 412 and sim.tickets[0]["status"] == "NEW"


@pytest.mark.parametrize("body,code", [
    (sr(reportedpriority=2), "BMXAA4021E"),  # the domain here is 1, 3, 5
    (sr(assetnum="NOPE"), "BMXAA2661E"),
    (sr(assetnum="MIX-9"), "BMXAA2661E"),  # exists, but at another site
    (sr(externalrecid="X" * 21), "BMXAA4049E"),
    (sr(description="d" * 101), "BMXAA4049E"),
    (sr(bogus=1), "BMXAA8094E"),
    (sr(ticketid="42"), "BMXAA4047E"),
])
async def test_validation_errors(sim: MaximoSimulator, http: aiohttp.ClientSession,
                                 body: dict[str, Any], code: str) -> None:
    async with http.post(coll(sim), json=body, headers=KEY) as resp:
        assert resp.status == 400
        err = (await resp.json())["Error"]
    assert err["reasonCode"] == code and err["message"].startswith(code)
    assert sim.tickets == []


async def test_unknown_member_and_object_structure_are_404(
        sim: MaximoSimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(coll(sim) + "/_U1IvOTk5OQ--", headers=KEY) as resp:
        assert resp.status == 404
    async with http.get(f"{sim.url}/maximo/api/os/mxapinope", headers=KEY) as resp:
        assert resp.status == 404
        assert (await resp.json())["Error"]["statusCode"] == "404"
