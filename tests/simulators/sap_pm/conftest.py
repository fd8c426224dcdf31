"""Fixtures for the SAP PM simulator suite: a running simulator and a CSRF-aware raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from simulators.sap_pm import SERVICE_PATH, SapPmSimulator

AUTH = {"Authorization": aiohttp.encode_basic_auth("PB_COMM", "secret")}
EQUIPMENT = {"210100094": "EAMS_EQUI", "1010-CWS-WCS-CWCP1": "EAMS_FL"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def payload(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "NotificationText": "Pump P-1 vibration high",
        "NotificationType": "M2",
        "TechnicalObject": "210100094",
        "TechObjIsEquipOrFuncnlLoc": "EAMS_EQUI",
        "MaintPriority": "2",
        "MaintNotifExtReferenceNumber": "PBABCDEFGHIJKLMNOPQR",
    }
    return {k: v for k, v in (doc | over).items() if v is not None}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SapPmSimulator]:
    s = SapPmSimulator(equipment=EQUIPMENT, csrf_ttl_seconds=60.0, clock=clock)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


class Client:
    """A plain OData client over one cookie jar: fetch a token, then send writes with it."""

    def __init__(self, sim: SapPmSimulator, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.http = http
        self.token: str | None = None

    def url(self, resource: str = "") -> str:
        return self.sim.url + SERVICE_PATH + resource

    async def fetch(self, method: str = "GET") -> str:
        async with self.http.request(method, self.url(), headers={"X-CSRF-Token": "Fetch"},
                                     params={"sap-client": "100"}) as resp:
            assert resp.status == 200, await resp.text()
            token = resp.headers["x-csrf-token"]
        self.token = token
        return token

    async def call(self, method: str, resource: str, body: Any = None,
                   params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], Any]:
        h = {"Accept": "application/json"}
        if self.token is not None:
            h["X-CSRF-Token"] = self.token
        h.update(headers or {})
        data = None if body is None else orjson.dumps(body)
        if data is not None:
            h["Content-Type"] = "application/json"
        async with self.http.request(method, self.url(resource), data=data, headers=h,
                                     params=params) as resp:
            raw = await resp.read()
            parsed = orjson.loads(raw) if raw and resp.content_type == "application/json" \
                else raw.decode()
            return resp.status, CIMultiDict(resp.headers), parsed

    async def create(self, **over: Any) -> dict[str, Any]:
        status, _, doc = await self.call("POST", "/MaintenanceNotification", payload(**over))
        assert status == 201, doc
        return dict(doc["d"])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
            headers=AUTH,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


@pytest.fixture
async def client(sim: SapPmSimulator, http: aiohttp.ClientSession) -> Client:
    c = Client(sim, http)
    await c.fetch()
    return c
