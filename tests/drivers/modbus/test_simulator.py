"""The plant simulator as a technician runs it: `python -m simulators.modbus_plant`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.modbus_plant import FAN_VFD, PUMP_DRIVE, Register, to_registers
from tests.drivers.modbus.support import collecting, plant_config
from tests.harness import free_port, port_open, wait_for, wait_for_sync

ROOT = Path(__file__).parents[3]


@pytest.fixture
def cli_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators.modbus_plant", "--port",
                             str(port), "--scenario", "bearing-failure", "--speed", "10"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_sync(lambda: port_open(port), 10, "simulator CLI listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


async def test_cli_serves_the_scenario(cli_port: int) -> None:
    source = plant_config(cli_port, interval_ms=50).build()
    async with collecting(source) as got:
        # bearing-failure at speed 10: pump-1 vibration passes 7.1 mm/s within ~1 s.
        await wait_for(lambda: any(s.asset == "pump-1" and s.signal == "vibration"
                                   and (s.value or 0) > 7.1 for s in got.samples()),
                       10, "pump-1 vibration above 7.1")
    assert all((s.value or 0) < 3 for s in got.samples()
               if s.asset == "pump-2" and s.signal == "vibration")


def test_register_layouts_written_apart_from_the_driver() -> None:
    assert to_registers(1.5, Register(3, 0, "f", "ABCD")) == [0x3FC0, 0x0000]
    assert to_registers(1.5, Register(3, 0, "f", "CDAB")) == [0x0000, 0x3FC0]
    assert to_registers(1.5, Register(3, 0, "f", "BADC")) == [0xC03F, 0x0000]
    assert to_registers(-300, Register(3, 0, "h")) == [0xFED4]
    assert to_registers(12.0, FAN_VFD["current"]) == [0xB004]  # 1200 = 0x04B0, bytes swapped
    assert to_registers(None, PUMP_DRIVE["vibration"]) == [0x7FC0, 0x0000]  # NaN
