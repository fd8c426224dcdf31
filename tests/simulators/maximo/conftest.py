"""Fixtures for the Maximo simulator suite: a running simulator and a plain HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulators.maximo import MaximoSimulator

KEY = {"apikey": "test-key"}


@pytest.fixture
async def sim() -> AsyncIterator[MaximoSimulator]:
    s = MaximoSimulator(assets={"PUMP-1": "BEDFORD", "FAN-1": "BEDFORD", "MIX-9": "NASHUA"},
                        priority_domain=(1, 3, 5))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def sr(**over: Any) -> dict[str, Any]:
    """A valid create body."""
    return {"description": "pump-1: vibration high", "assetnum": "PUMP-1", "siteid": "BEDFORD",
            "reportedpriority": 1, "externalrecid": "PBAAAAAAAAAAAAAAAAAA"} | over
