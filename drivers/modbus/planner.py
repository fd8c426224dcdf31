"""The read plan: points coalesced into as few requests as the protocol allows, computed once.

Per table, points sorted by address are swept left to right; a point joins the current request
when the hole before it is at most `max_gap` registers (or bits) and the request stays within
the per-read limit (125 registers / 2000 bits). The greedy sweep gives the fewest requests for
these two constraints. Holes are read and thrown away: set `max_gap_registers = 0` for devices
that answer "illegal address" for registers they do not implement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.config import ModbusSourceConfig, Point, Table

FUNCTION_CODE = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


@dataclass(frozen=True, slots=True)
class Read:
    """One request: `count` registers (or bits) of `table` from `start`, and what it carries."""

    table: Table
    start: int
    count: int
    points: tuple[int, ...]  # indexes into the device's point list
    offsets: tuple[int, ...]  # where each of those points starts inside the block

    @property
    def function_code(self) -> int:
        return FUNCTION_CODE[self.table]


def plan(points: Sequence[Point], max_gap: int, max_registers: int = 125,
         max_bits: int = 2000) -> list[Read]:
    """Coalesce `points` (one device) into reads, ordered by table then address."""
    reads: list[Read] = []
    for table in (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT):
        limit = max_bits if table.is_bits else max_registers
        members = sorted((i for i, p in enumerate(points) if p.table is table),
                         key=lambda i: (points[i].address, -points[i].type.registers))
        block: list[int] = []
        start = end = 0
        for i in members:
            a, w = points[i].address, points[i].type.registers
            if w > limit:
                raise ValueError(f"point {points[i].signal} spans {w} registers, over the"
                                 f" per-read limit {limit}")
            if block and a - end <= max_gap and max(end, a + w) - start <= limit:
                block.append(i)
                end = max(end, a + w)
                continue
            if block:
                reads.append(_read(table, start, end, block, points))
            block, start, end = [i], a, a + w
        if block:
            reads.append(_read(table, start, end, block, points))
    return reads


def _read(table: Table, start: int, end: int, block: list[int], points: Sequence[Point]) -> Read:
    return Read(table, start, end - start, tuple(block),
                tuple(points[i].address - start for i in block))


def plan_source(config: ModbusSourceConfig) -> dict[int, list[Read]]:
    """unit id -> its reads. Devices that share a map (and add no points) share one plan."""
    cache: dict[tuple[Point, ...], list[Read]] = {}
    out: dict[int, list[Read]] = {}
    for dev in config.devices:
        points = tuple(config.points_of(dev))
        if points not in cache:
            cache[points] = plan(points, config.max_gap_registers, config.max_registers_per_read,
                                 config.max_bits_per_read)
        out[dev.unit_id] = cache[points]
    return out


def explain(config: ModbusSourceConfig) -> str:
    """The plan in plain text, for `plantbridge check --explain`."""
    plans = plan_source(config)
    where = (f"{config.serial.port} ({config.serial.baudrate} baud)"
             if config.serial is not None and config.host is None
             else f"{config.host}:{config.port}")
    links = f", {config.connections} connections" if config.connections > 1 else ""
    lines = [f"modbus source {config.name!r}: {config.transport} {where}{links},"
             f" max gap {config.max_gap_registers}"]
    total_per_second = 0.0
    total_points = 0
    for dev in config.devices:
        points = config.points_of(dev)
        reads = plans[dev.unit_id]
        total_points += len(points)
        per_second = len(reads) * 1000.0 / dev.poll_interval_ms
        total_per_second += per_second
        label = f"map {dev.map!r}" if dev.map else "inline points"
        lines.append(f"  unit {dev.unit_id} ({dev.asset or 'per-point assets'}, {label}):"
                     f" {len(points)} points in {len(reads)} requests every"
                     f" {dev.poll_interval_ms} ms")
        for r in reads:
            unit = ("bit" if r.table.is_bits else "register") + ("s" if r.count != 1 else "")
            names = ", ".join(points[i].signal for i in r.points)
            used = sum(1 if points[i].table.is_bits else points[i].type.registers
                       for i in r.points)
            waste = f", {max(r.count - used, 0)} unused" if r.count > used else ""
            lines.append(f"    FC{r.function_code:02d} {r.table} {r.start}..{r.start + r.count - 1}"
                         f" ({r.count} {unit}{waste}): {names}")
    lines.append(f"  total: {total_points} points, {total_per_second:.1f} requests/s")
    return "\n".join(lines)
