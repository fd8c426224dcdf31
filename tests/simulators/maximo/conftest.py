"""Fixtures for the Maximo simulator suite: a running simulator and a create body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulators.maximo import MaximoSimulator

KEY = {"apikey": "test-key"}


@pytest.fixture
async def sim() -> AsyncIterator[MaximoSimulator]:
    s = MaximoSimulator(assets={"PUMP-1": "BEDFORD", "FAN-1": "BEDFORD", "MIX-9": "NASHUA"},
                        priority_domain=(1, 3, 5))
    async with s:
        yield s


def sr(**over: Any) -> dict[str, Any]:
    """A valid create body."""
    return {"description": "pump-1: vibration high", "assetnum": "PUMP-1", "siteid": "BEDFORD",
            "reportedpriority": 1, "externalrecid": "PBAAAAAAAAAAAAAAAAAA"} | over
