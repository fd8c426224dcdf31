"""Fixtures for the CMMS simulator suite: a running simulator and request helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from simulators.cmms import CmmsSimulator

REQUESTS = "/api/v1/maintenance-requests"
AUTH = {"Authorization": "Bearer test-key"}


def body(**over: Any) -> bytes:
    doc = {"title": "Pump P-1 vibration high", "asset": "pump-1", "priority": 2,
           "dedup_key": "PBABCDEFGHIJKLMNOPQR"} | over
    return orjson.dumps(doc)


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    async with CmmsSimulator(api_key="test-key") as s:
        yield s


async def post(http: aiohttp.ClientSession, url: str, data: bytes, key: str | None = "k-1",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    h = dict(AUTH if headers is None else headers)
    if key is not None:
        h["Idempotency-Key"] = f'"{key}"'
    async with http.post(url, data=data, headers=h) as resp:
        raw = await resp.read()
        return resp.status, dict(resp.headers), orjson.loads(raw) if raw else None
