"""Interop: servers and framings we did not write (pyModbusTCP), and RTU framing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.framer import FramerType
from pyModbusTCP.server import DataBank, ModbusServer

from drivers.modbus.config import ModbusSourceConfig
from gateway.model import Quality
from simulators.modbus_plant import ModbusPlantSimulator
from tests.drivers.modbus.support import collecting, example_raw, plant_config
from tests.harness import free_port, wait_for, wait_for_sync

ASSETS = ("pump-1", "pump-2", "fan-1")
SIGNALS = ("vibration", "temperature", "current", "running")


@contextlib.contextmanager
def pymodbustcp_server(port: int) -> Iterator[DataBank]:
    bank = DataBank()
    server = ModbusServer(host="127.0.0.1", port=port, no_block=True, data_bank=bank)
    server.start()
    try:
        yield bank
    finally:
        server.stop()


async def test_reads_and_decodes_a_pymodbustcp_server() -> None:
    port = free_port()
    with pymodbustcp_server(port) as bank:
        # Register words written out by hand from the IEEE/two's complement big-endian bytes.
        bank.set_holding_registers(0, [0x0000, 0xC148])  # float32 -12.5, word order CDAB
        bank.set_holding_registers(2, [0xFED4])  # int16 -300
        bank.set_holding_registers(3, [0x0001, 0x1170])  # uint32 70000
        bank.set_holding_registers(10, [0x0000, 0x0000, 0x8084, 0x2E41])  # float64 1e6 DCBA
        bank.set_holding_registers(20, [0x0020])  # bit 5 set
        bank.set_input_registers(0, [0xFEFF, 0xC01D])  # int32 -123456, BADC
        bank.set_coils(7, [True])
        bank.set_discrete_inputs(3, [True])
        points = [
            {"signal": "flow", "table": "holding", "address": 0, "type": "float32",
             "word_order": "little"},
            {"signal": "delta", "table": "holding", "address": 2, "type": "int16",
             "scale": 0.1},
            {"signal": "count", "table": "holding", "address": 3, "type": "uint32"},
            {"signal": "energy", "table": "holding", "address": 10, "type": "float64",
             "byte_order": "little", "word_order": "little"},
            {"signal": "alarm", "table": "holding", "address": 20, "type": "bitfield", "bit": 5},
            {"signal": "quiet", "table": "holding", "address": 20, "type": "bitfield", "bit": 4},
            {"signal": "position", "table": "input", "address": 0, "type": "int32",
             "byte_order": "little", "offset": 1000},
            {"signal": "valve", "table": "coil", "address": 7, "type": "bool"},
            {"signal": "door", "table": "discrete", "address": 3, "type": "bool"},
            {"signal": "spare", "table": "discrete", "address": 4, "type": "bool"},
        ]
        cfg = ModbusSourceConfig.model_validate({
            "name": "pymodbustcp", "host": "127.0.0.1", "port": port,
            "devices": [{"unit_id": 1, "asset": "skid-7", "points": points,
                         "poll_interval_ms": 100}]})
        source = cfg.build()
        async with collecting(source) as got:
            await wait_for(lambda: len(got.batches) >= 1, 5, "one poll")
    values = {s.signal: s.value for s in got.batches[0][1]}
    assert all(s.quality is Quality.GOOD for s in got.batches[0][1])
    assert values == {"flow": -12.5, "delta": pytest.approx(-30.0), "count": 70000.0,
                      "energy": 1e6, "alarm": 1.0, "quiet": 0.0, "position": -122456.0,
                      "valve": 1.0, "door": 1.0, "spare": 0.0}
    assert source.requests_per_cycle() == {1: 4}  # coil, discrete, holding 0..20, input


async def test_rtu_framing_over_tcp() -> None:
    port = free_port()
    async with ModbusPlantSimulator("127.0.0.1", port, "steady", framer=FramerType.RTU) as sim:
        source = plant_config(sim.port, transport="rtu_over_tcp").build()
        async with collecting(source) as got:
            await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        assert sim.request_count >= 8


@contextlib.contextmanager
def pty_pair(workdir: Path) -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat not installed: `make test` installs it (Debian package socat)")
    a, b = workdir / "ttyA", workdir / "ttyB"
    proc = subprocess.Popen([socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_sync(lambda: a.exists() and b.exists(), 5, "socat pty pair")
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.skipif(importlib.util.find_spec("serial") is None,
                    reason="pyserial missing: pymodbus's serial client and server need it"
                           " (dependency `pymodbus[serial]`)")
async def test_rtu_over_a_serial_pty_pair(tmp_path: Path) -> None:
    with pty_pair(tmp_path) as (server_end, client_end):
        sim = ModbusPlantSimulator(scenario="steady", serial_port=server_end)
        await sim.start()
        try:
            raw = example_raw(1) | {"transport": "rtu", "host": None,
                                     "serial": {"port": client_end, "baudrate": 115200}}
            for dev in raw["devices"]:
                dev.update(poll_interval_ms=100, timeout_seconds=0.5)
            source = ModbusSourceConfig.model_validate(raw).build()
            async with collecting(source) as got:
                await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 10, "every point GOOD")
            assert sim.request_count >= 8
        finally:
            await sim.stop()
            await asyncio.sleep(0)
