"""A Modbus server (pymodbus) playing the shared plant scenarios, for tests, demo and benchmarks.

Each asset is its own unit id behind one server (pump-1 = 1, pump-2 = 2, fan-1 = 3), as behind
a serial-to-Ethernet gateway. The pumps are one drive model, the fan another, in a mix of types
and byte orders (see PLANT below; `config/examples/source-modbus.toml` is the matching register
map). Values follow the scenario clock (times `speed`); a failed sensor reads NaN.

Fault injection per unit (`sim.faults[unit] = Fault.SILENT`): stop answering, answer with an
exception, or answer late. `request_count` and `requests_by_unit` count what arrived, so tests
can check how many requests a register map costs. Optional load units (ids 10..) each hold
`load_registers` holding registers for benchmarks.

    python -m simulators.modbus_plant --port 5020 --scenario bearing-failure
    python -m simulators.modbus_plant --port 5020 --framer rtu      # RTU framing over TCP
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import enum
import logging
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from simulators import scenario as plant

log = logging.getLogger(__name__)
LOAD_FIRST_UNIT = 10


class Fault(enum.StrEnum):
    NONE = "none"
    SILENT = "silent"  # the unit stops answering (the request times out at the client)
    EXCEPTION = "exception"  # answers with `exception_code`
    SLOW = "slow"  # answers after `slow_seconds`


@dataclass(frozen=True, slots=True)
class Register:
    """Where the simulator puts one signal. fc: 1 coil, 2 discrete, 3 holding, 4 input."""

    fc: int
    address: int
    kind: str  # struct code: h H i I q Q f d, "bit" (coil / discrete) or "b<n>" (bit n)
    order: str = "ABCD"  # byte layout of the value, A = most significant byte
    scale: float = 1.0  # raw = value / scale


PUMP_DRIVE = {
    "vibration": Register(4, 0, "f", "ABCD"),
    "temperature": Register(3, 100, "h", scale=0.1),
    "current": Register(3, 102, "f", "CDAB"),
    "running": Register(1, 0, "bit"),
}
FAN_VFD = {
    "vibration": Register(3, 0, "d", "HGFEDCBA"),
    "temperature": Register(3, 4, "i", "BADC", scale=0.01),
    "current": Register(4, 0, "H", "BA", scale=0.01),
    "running": Register(3, 10, "b3"),
}
PLANT: dict[int, tuple[str, dict[str, Register]]] = {
    1: ("pump-1", PUMP_DRIVE), 2: ("pump-2", PUMP_DRIVE), 3: ("fan-1", FAN_VFD)}


def to_registers(value: float | None, reg: Register) -> list[int]:
    """Raw registers for `value`, laid out as `reg.order` says (written apart from the driver's
    codec on purpose: the two must agree without sharing code)."""
    size = struct.calcsize(reg.kind)
    if value is None or (reg.kind not in "fd" and math.isnan(value)):
        big = struct.pack(">" + reg.kind, math.nan) if reg.kind in "fd" else (
            b"\x80" + b"\x00" * (size - 1))
    else:
        raw = value / reg.scale
        big = struct.pack(">" + reg.kind, raw if reg.kind in "fd" else round(raw))
    letters = "ABCDEFGH"[:size]
    order = reg.order if len(reg.order) == size else letters
    laid = bytes(big[letters.index(c)] for c in order)
    return list(struct.unpack(f">{size // 2}H", laid))


class _Store(ModbusServerContext):
    """The units' tables, refreshed from the scenario on every read; faults applied here."""

    def __init__(self, sim: ModbusPlantSimulator) -> None:  # no super(): it only warns
        self.sim = sim
        self.old_simulator = True
        self.simdevices = []
        self.tables: dict[int, dict[int, list[int]]] = {}
        for unit, (_asset, regmap) in PLANT.items():
            tables: dict[int, list[int]] = {1: [0] * 16, 2: [0] * 16, 3: [0] * 128, 4: [0] * 16}
            self.tables[unit] = tables
            for reg in regmap.values():
                assert reg.address < len(tables[reg.fc])
        for i in range(sim.load_units):
            regs = [(i * 7 + a) & 0xFFFF for a in range(sim.load_registers)]
            self.tables[LOAD_FIRST_UNIT + i] = {1: [], 2: [], 3: regs, 4: []}

    def device_ids(self) -> list[int]:
        return list(self.tables)

    def _refresh(self, unit: int) -> None:
        if unit not in PLANT:
            return
        asset, regmap = PLANT[unit]
        elapsed = (time.monotonic() - self.sim.started_at) * self.sim.speed
        tables = self.tables[unit]
        for signal, reg in regmap.items():
            value = self.sim.scenario.signals[(asset, signal)](elapsed)
            if reg.kind == "bit":
                tables[reg.fc][reg.address] = int(bool(value))
            elif reg.kind.startswith("b"):
                bit = int(reg.kind[1:])
                word = tables[reg.fc][reg.address] & ~(1 << bit)
                tables[reg.fc][reg.address] = word | (int(bool(value)) << bit)
            else:
                regs = to_registers(value, reg)
                tables[reg.fc][reg.address:reg.address + len(regs)] = regs

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> Any:
        sim = self.sim
        sim.request_count += 1
        sim.requests_by_unit[device_id] += 1
        if device_id not in self.tables:
            raise NoSuchIdException(f"no unit {device_id}")
        fault = sim.faults.get(device_id, Fault.NONE)
        if fault is Fault.SILENT:
            raise NoSuchIdException(f"unit {device_id} is silent")
        if fault is Fault.EXCEPTION:
            return ExcCodes(sim.exception_code)
        if fault is Fault.SLOW:
            await asyncio.sleep(sim.slow_seconds)
        table = self.tables[device_id].get(func_code)
        if table is None or address + count > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        self._refresh(device_id)
        values = table[address:address + count]
        return [bool(v) for v in values] if func_code in (1, 2) else values

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: Sequence[int] | Sequence[bool]) -> Any:
        return ExcCodes.ILLEGAL_FUNCTION  # read-only plant


class _Handler(ServerRequestHandler):
    """pymodbus's handler keeps one `last_pdu` slot and reads it again after awaiting the
    datastore: a slow answer would go out under the next request's transaction id. Capture the
    request before awaiting; a silent unit (NoSuchIdException) gets no answer at all."""

    def handle_later(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        task = asyncio.ensure_future(self._answer(pdu, addr))
        self.server.sim.pending.add(task)
        task.add_done_callback(self.server.sim.pending.discard)

    async def _answer(self, pdu: Any, addr: Any) -> None:
        try:
            response = await pdu.datastore_update(self.server.context, pdu.dev_id)
        except NoSuchIdException:
            return
        except Exception:  # a simulator bug must still answer, like a confused device would
            log.exception("simulator failed on %s", pdu)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if self.transport is not None:
            self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _TcpServer(ModbusTcpServer):
    sim: ModbusPlantSimulator

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu,  # type: ignore[no-untyped-call]
                        self.trace_connect)


class _SerialServer(ModbusSerialServer):
    sim: ModbusPlantSimulator

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu,  # type: ignore[no-untyped-call]
                        self.trace_connect)


class ModbusPlantSimulator:
    """The plant behind one Modbus server: TCP (MBAP or RTU framing) or a serial port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5020,
                 scenario: str | plant.Scenario = "steady", speed: float = 1.0, *,
                 framer: FramerType = FramerType.SOCKET, serial_port: str | None = None,
                 load_units: int = 0, load_registers: int = 0) -> None:
        self.host, self.port = host, port
        self.scenario = plant.get(scenario) if isinstance(scenario, str) else scenario
        self.speed = speed
        self.framer = framer
        self.serial_port = serial_port
        self.load_units, self.load_registers = load_units, load_registers
        self.faults: dict[int, Fault] = {}
        self.exception_code = int(ExcCodes.DEVICE_FAILURE)
        self.slow_seconds = 1.0
        self.request_count = 0
        self.requests_by_unit: collections.Counter[int] = collections.Counter()
        self.started_at = time.monotonic()
        self.pending: set[asyncio.Future[None]] = set()
        self._server: _TcpServer | _SerialServer | None = None

    async def start(self) -> None:
        store = _Store(self)
        server: _TcpServer | _SerialServer
        if self.serial_port is not None:
            server = _SerialServer(store, framer=FramerType.RTU, port=self.serial_port,
                                   baudrate=115200, ignore_missing_devices=True)
        else:
            server = _TcpServer(store, framer=self.framer, address=(self.host, self.port),
                                ignore_missing_devices=True)
        server.sim = self
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        for task in list(self.pending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset_counters(self) -> None:
        self.request_count = 0
        self.requests_by_unit.clear()


async def _main(args: argparse.Namespace) -> None:
    sim = ModbusPlantSimulator(args.host, args.port, args.scenario, args.speed,
                               framer=FramerType.RTU if args.framer == "rtu"
                               else FramerType.SOCKET,
                               serial_port=args.serial_port, load_units=args.load_units,
                               load_registers=args.load_registers)
    async with sim:
        where = args.serial_port or f"{args.host}:{args.port}"
        print(f"modbus plant {sim.scenario.name!r} on {where} ({args.framer} framing);"
              f" units {', '.join(f'{u}={a}' for u, (a, _m) in PLANT.items())}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020)
    p.add_argument("--scenario", default="steady", choices=list(plant.SCENARIOS))
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--framer", choices=["socket", "rtu"], default="socket")
    p.add_argument("--serial-port", help="serve RTU on this serial device instead of TCP")
    p.add_argument("--load-units", type=int, default=0)
    p.add_argument("--load-registers", type=int, default=0)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
