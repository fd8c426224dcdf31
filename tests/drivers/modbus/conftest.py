"""Fixtures of the Modbus suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.modbus_plant import ModbusPlantSimulator
from tests.harness import free_port


@pytest.fixture
async def plant() -> AsyncIterator[ModbusPlantSimulator]:
    """The plant simulator (steady scenario) on a free loopback port."""
    async with ModbusPlantSimulator("127.0.0.1", free_port(), "steady") as sim:
        yield sim
