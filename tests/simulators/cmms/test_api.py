"""The simulator's API surface: auth, validation, status updates, lookup, control endpoints."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from simulators.cmms import CmmsSimulator
from tests.simulators.cmms.conftest import AUTH, REQUESTS, body, post


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "test-key"},
])
async def test_unauthenticated_is_401_problem(sim: CmmsSimulator, http: aiohttp.ClientSession,
                                              headers: dict[str, str]) -> None:
    status, resp_headers, doc = await post(http, sim.url + REQUESTS, body(), headers=headers)
    assert status == 401
    assert resp_headers["Content-Type"] == "application/problem+json"
    assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    assert doc["title"] == "Unauthorized"
    assert sim.requests == [] and len(sim.idempotency) == 0
    assert sim.received[("POST", REQUESTS, 401)] == 1


async def test_api_key_header_is_accepted(sim: CmmsSimulator,
                                          http: aiohttp.ClientSession) -> None:
    status, _, _ = await post(http, sim.url + REQUESTS, body(), headers={"X-API-Key": "test-key"})
    assert status == 201


@pytest.mark.parametrize(("over", "field"), [
    ({"title": None}, "title"), ({"asset": None}, "asset"), ({"title": "x" * 201}, "title"),
    ({"title": ""}, "title"), ({"priority": 9}, "priority"), ({"dedup_key": "x" * 21}, "dedup_key"),
])
async def test_validation_is_422_with_field(sim: CmmsSimulator, http: aiohttp.ClientSession,
                                            over: dict[str, object], field: str) -> None:
    status, _, doc = await post(http, sim.url + REQUESTS, body(**over))
    assert status == 422
    assert [e["field"] for e in doc["errors"]] == [field]
    assert sim.requests == []


async def test_malformed_json_is_400(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    assert (await post(http, sim.url + REQUESTS, b"{not json"))[0] == 400
    assert (await post(http, sim.url + REQUESTS, b"[1]", key="k-2"))[0] == 400


async def test_status_update_changes_request(sim: CmmsSimulator,
                                             http: aiohttp.ClientSession) -> None:
    _, _, created = await post(http, sim.url + REQUESTS, body())
    url = f"{sim.url}{REQUESTS}/{created['id']}/status-updates"
    status, headers, doc = await post(http, url, b'{"status": "cleared", "reason": "ok"}',
                                      key="u-1")
    assert status == 201 and doc["id"] == "SU-000001" and doc["request_id"] == created["id"]
    assert headers["Location"].endswith("/status-updates/SU-000001")
    assert sim.requests[0]["status"] == "cleared"
    assert [h["status"] for h in sim.requests[0]["status_history"]] == ["open", "cleared"]
    assert sim.status_updates[0]["body"]["reason"] == "ok"
    async with http.get(f"{sim.url}{REQUESTS}/{created['id']}", headers=AUTH) as resp:
        assert (await resp.json())["status"] == "cleared"


async def test_status_update_errors(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    missing = f"{sim.url}{REQUESTS}/MR-999999/status-updates"
    assert (await post(http, missing, b'{"status": "cleared"}'))[0] == 404
    _, _, created = await post(http, sim.url + REQUESTS, body(), key="r-1")
    url = f"{sim.url}{REQUESTS}/{created['id']}/status-updates"
    assert (await post(http, url, b'{"status": "exploded"}', key="u-1"))[0] == 422
    assert (await post(http, url, b'{"reason": "no status"}', key="u-2"))[0] == 422
    assert (await post(http, url, b'{"status": "cleared"}', key=None))[0] == 400
    assert sim.status_updates == []


async def test_lookup_by_external_ref(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    await post(http, sim.url + REQUESTS, body(dedup_key="PBREF1"), key="a")
    await post(http, sim.url + REQUESTS, body(dedup_key="PBREF2"), key="b")
    async with http.get(sim.url + REQUESTS, params={"external_ref": "PBREF2"},
                        headers=AUTH) as resp:
        found = await resp.json()
    assert [f["id"] for f in found] == ["MR-000002"]
    async with http.get(sim.url + REQUESTS, params={"external_ref": "none"},
                        headers=AUTH) as resp:
        assert await resp.json() == []
    async with http.get(sim.url + REQUESTS) as resp:
        assert resp.status == 401


async def test_health_needs_auth(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + "/api/v1/health", headers=AUTH) as resp:
        assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    async with http.get(sim.url + "/api/v1/health") as resp:
        assert resp.status == 401


async def test_control_endpoints(sim: CmmsSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(sim.url + "/_sim/faults",
                         json={"mode": "error_5xx", "count": 1, "status": 502}) as resp:
        assert resp.status == 200 and (await resp.json())["mode"] == "error_5xx"
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 502
    assert (await post(http, sim.url + REQUESTS, body()))[0] == 201
    async with http.post(sim.url + "/_sim/faults", json={"mode": "bogus"}) as resp:
        assert resp.status == 400
    async with http.post(sim.url + "/_sim/faults", json={"mode": "slow", "delay": 1}) as resp:
        assert resp.status == 400  # unknown field
    async with http.get(sim.url + "/_sim/state") as resp:
        state = await resp.json()
    assert [r["id"] for r in state["requests"]] == ["MR-000001"]
    counts = {(c["method"], c["path"], c["status"]): c["count"] for c in state["counters"]}
    assert counts == {("POST", REQUESTS, 502): 1, ("POST", REQUESTS, 201): 1}
    assert state["faults"]["mode"] == "none"


async def test_status_updates_find_their_request_by_id_after_deletes_and_a_restart(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Requests are found by id from an index beside `sim.requests`: it follows creates,
    requests entered by hand, deletes, and the state file read at start."""
    state = tmp_path / "cmms.json"
    async with CmmsSimulator(api_key="test-key", state_file=state) as sim:
        ids = [(await post(http, sim.url + REQUESTS, body(asset=f"pump-{i}"), key=f"c-{i}")
                )[2]["id"] for i in range(3)]
        foreign = sim.add_foreign("PBFOREIGN", "pump-9")
        sim.delete_request(ids[1])
        for n, rid in enumerate([ids[2], foreign, ids[0]]):
            status, _, doc = await post(http, f"{sim.url}{REQUESTS}/{rid}/status-updates",
                                        b'{"status": "cleared"}', key=f"u-{n}")
            assert (status, doc["request_id"]) == (201, rid)
        status, _, doc = await post(http, f"{sim.url}{REQUESTS}/{ids[1]}/status-updates",
                                    b'{"status": "cleared"}', key="u-deleted")
        assert status == 404, doc
    async with CmmsSimulator(api_key="test-key", state_file=state) as again:
        status, _, doc = await post(http, f"{again.url}{REQUESTS}/{ids[2]}/status-updates",
                                    b'{"status": "closed"}', key="u-after-restart")
        assert (status, doc["request_id"]) == (201, ids[2])
        assert [r["status"] for r in again.requests if r["id"] == ids[2]] == ["closed"]
