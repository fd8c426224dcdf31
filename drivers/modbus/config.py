"""Config of one Modbus source: one connection (TCP, serial RTU, or RTU framing over TCP) and
the devices (unit ids) behind it, with register maps defined once and shared by many devices.

Addresses are protocol addresses, counted from 0 (holding register 40001 is address 0).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from gateway.produces import Produced, Produces
from gateway.settings import StrictModel
from gateway.valid_range import ValidRangeSettings

if TYPE_CHECKING:
    from drivers.modbus.driver import ModbusSource

MAX_REGISTERS_PER_READ = 125  # Modbus limit for function codes 3 and 4
MAX_BITS_PER_READ = 2000  # Modbus limit for function codes 1 and 2


class Transport(enum.StrEnum):
    TCP = "tcp"  # Modbus TCP (MBAP framing)
    RTU = "rtu"  # RTU framing on a serial port
    RTU_OVER_TCP = "rtu_over_tcp"  # RTU framing through a serial-to-Ethernet converter


class Table(enum.StrEnum):
    HOLDING = "holding"  # function code 3
    INPUT = "input"  # function code 4
    COIL = "coil"  # function code 1
    DISCRETE = "discrete"  # function code 2

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(enum.StrEnum):
    BOOL = "bool"  # a coil or discrete input
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BITFIELD = "bitfield"  # one bit (`bit`, 0 = least significant) of a 16-bit register

    @property
    def registers(self) -> int:
        """How many 16-bit registers a value of this type spans (1 for bits)."""
        return _WIDTH[self]


_WIDTH = {DataType.BOOL: 1, DataType.INT16: 1, DataType.UINT16: 1, DataType.BITFIELD: 1,
          DataType.INT32: 2, DataType.UINT32: 2, DataType.FLOAT32: 2,
          DataType.INT64: 4, DataType.UINT64: 4, DataType.FLOAT64: 4}


class ByteOrder(enum.StrEnum):
    """Order of the two bytes inside each register (big: the Modbus standard)."""

    BIG = "big"
    LITTLE = "little"


class WordOrder(enum.StrEnum):
    """Order of the registers of a multi-register value (big: most significant word first)."""

    BIG = "big"
    LITTLE = "little"


class Parity(enum.StrEnum):
    NONE = "none"
    EVEN = "even"
    ODD = "odd"


@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class Point:
    """One signal: where it lives and how to turn its raw value into engineering units.

    A slotted pydantic dataclass, not a model: a config can hold 100,000 points, and a model
    instance costs about 1,090 bytes (its `__dict__` and fields-set) against 120 here. It
    validates the same, is frozen and hashable (the planner keys plans by points), and
    `ModbusSourceConfig.model_dump()` includes it as before."""

    signal: Annotated[str, Field(min_length=1)]
    table: Table
    address: Annotated[int, Field(ge=0, le=65535)]
    type: DataType
    asset: str | None = None  # overrides the device's asset for this point
    bit: int | None = Field(default=None, ge=0, le=15)  # only with type bitfield
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.table.is_bits and self.type is not DataType.BOOL:
            raise ValueError(f"point {self.signal}: {self.table} holds bits; use type bool")
        if not self.table.is_bits and self.type is DataType.BOOL:
            raise ValueError(f"point {self.signal}: type bool is for coil/discrete tables;"
                             " use bitfield for a bit of a register")
        if (self.type is DataType.BITFIELD) != (self.bit is not None):
            raise ValueError(f"point {self.signal}: `bit` goes with type bitfield, and only it")
        if self.address + self.type.registers > 65536:
            raise ValueError(f"point {self.signal}: runs past address 65535")
        return self


class RegisterMap(StrictModel):
    """A named list of points, shared by every device that names it (`map = "..."`)."""

    points: list[Point] = Field(min_length=1)


class Device(StrictModel):
    """One unit id behind the connection, polled on its own schedule."""

    unit_id: int = Field(ge=0, le=255)
    asset: str | None = None  # default asset of its points
    map: str | None = None  # name of a shared map in `maps`
    points: list[Point] = Field(default_factory=list)  # inline points (added to the map's)
    poll_interval_ms: int = Field(default=1000, ge=10)
    timeout_seconds: float = Field(default=1.0, gt=0)
    retries: int = Field(default=0, ge=0, le=5)  # extra attempts per request, same cycle
    # After this many failed polls in a row the device is degraded: polled with backoff.
    failures_before_backoff: int = Field(default=2, ge=1)
    backoff_max_seconds: float = Field(default=30.0, gt=0)


class SerialSettings(StrictModel):
    port: str  # /dev/ttyUSB0, /dev/ttyS1, a pty
    baudrate: int = 9600
    parity: Parity = Parity.NONE
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class ModbusSourceConfig(ValidRangeSettings):
    type: Literal["modbus"] = "modbus"
    name: str = Field(min_length=1)
    transport: Transport = Transport.TCP
    host: str | None = None  # tcp and rtu_over_tcp
    port: int = Field(default=502, ge=1, le=65535)
    serial: SerialSettings | None = None  # rtu
    # TCP connections to the host, devices spread over them in turn. Requests on one connection
    # go one at a time; more connections poll devices in parallel and confine a silent device's
    # timeouts to its own connection. Many gateways accept only a few (often 1 to 4).
    connections: int = Field(default=1, ge=1, le=32)
    connect_timeout_seconds: float = Field(default=3.0, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    # Registers (or bits) between two points that may be read and thrown away to save a request.
    max_gap_registers: int = Field(default=10, ge=0, le=MAX_REGISTERS_PER_READ)
    max_registers_per_read: int = Field(default=MAX_REGISTERS_PER_READ, ge=4,
                                        le=MAX_REGISTERS_PER_READ)
    max_bits_per_read: int = Field(default=MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ)
    batch_queue_size: int = Field(default=256, ge=1)
    maps: dict[str, RegisterMap] = Field(default_factory=dict)
    devices: list[Device] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModbusSourceConfig:
        if self.transport is Transport.RTU:
            if self.serial is None:
                raise ValueError("transport rtu needs [serial] settings (port, baudrate...)")
            if self.connections != 1:
                raise ValueError("a serial line is one connection: connections must be 1")
        elif self.host is None:
            raise ValueError(f"transport {self.transport} needs host")
        if self.connections > len(self.devices):
            raise ValueError(f"connections ({self.connections}) exceeds the number of devices"
                             f" ({len(self.devices)})")
        seen_units: set[int] = set()
        keys: set[tuple[str, str]] = set()
        for dev in self.devices:
            if dev.unit_id in seen_units:
                raise ValueError(f"unit_id {dev.unit_id} appears twice")
            seen_units.add(dev.unit_id)
            if dev.map is not None and dev.map not in self.maps:
                raise ValueError(f"device {dev.unit_id}: unknown map {dev.map!r};"
                                 f" known: {', '.join(self.maps) or 'none'}")
            points = self.points_of(dev)
            if not points:
                raise ValueError(f"device {dev.unit_id}: give a map or points")
            for p in points:
                asset = p.asset or dev.asset
                if asset is None:
                    raise ValueError(f"device {dev.unit_id} point {p.signal}: no asset"
                                     " (set it on the device or the point)")
                if (asset, p.signal) in keys:
                    raise ValueError(f"{asset}/{p.signal} is mapped twice")
                keys.add((asset, p.signal))
        return self

    def points_of(self, device: Device) -> list[Point]:
        """The map's points followed by the device's own."""
        shared = self.maps[device.map].points if device.map is not None else []
        return [*shared, *device.points]

    def produces(self) -> Produces:
        """Every (asset, signal) of the register maps: a Modbus source knows all it delivers."""
        return Produces.of(self.name, (
            Produced(p.asset or dev.asset, p.signal, f"unit {dev.unit_id} point {p.signal}")
            for dev in self.devices for p in self.points_of(dev)))

    def build(self) -> ModbusSource:
        from drivers.modbus.driver import ModbusSource

        return ModbusSource(self)
