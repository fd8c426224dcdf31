"""Fixtures of the OPC UA suite: plant simulators on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from simulators.opcua_plant import OpcUaPlantSimulator
from tests.drivers.opcua.support import SimFactory
from tests.harness import free_port


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    """Start plant simulators on free ports; all are stopped at the end of the test."""
    started: list[OpcUaPlantSimulator] = []

    async def make(**kwargs: Any) -> OpcUaPlantSimulator:
        sim = OpcUaPlantSimulator(port=free_port(), **kwargs)
        started.append(sim)
        await sim.__aenter__()
        return sim

    yield make
    for sim in started:
        await sim.__aexit__(None, None, None)


