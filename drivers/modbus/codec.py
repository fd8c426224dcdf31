"""Registers to numbers: every type in every byte and word order, fast enough for 100k points.

A block of registers is packed into bytes once, in two layouts: as sent (each register
big-endian) and byte-swapped (each register little-endian). Any of the four orders of a
multi-register value is then one `struct` read:

    byte big,    word big     (ABCD): as sent,  big-endian struct
    byte little, word little  (DCBA): as sent,  little-endian struct
    byte little, word big     (BADC): swapped,  big-endian struct
    byte big,    word little  (CDAB): swapped,  little-endian struct

Points that do not overlap are read with one precompiled `struct.Struct` per layout, so the
cost per point is a tuple slot, not a Python call. pymodbus's `convert_from_registers` only
knows word order, hence this module.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.config import ByteOrder, DataType, WordOrder

_CODE = {DataType.INT16: "h", DataType.UINT16: "H", DataType.INT32: "i", DataType.UINT32: "I",
         DataType.INT64: "q", DataType.UINT64: "Q", DataType.FLOAT32: "f", DataType.FLOAT64: "d",
         DataType.BITFIELD: "H"}
_FLOATS = (DataType.FLOAT32, DataType.FLOAT64)


def layout(dtype: DataType, byte_order: ByteOrder, word_order: WordOrder) -> tuple[bool, str]:
    """(read from the byte-swapped buffer?, struct endianness) for a value of this order."""
    if dtype.registers == 1:
        return byte_order is ByteOrder.LITTLE, ">"
    swapped = byte_order.value != word_order.value  # BADC and CDAB
    endian = ">" if word_order is WordOrder.BIG else "<"
    return swapped, endian


def _buffers(registers: Sequence[int]) -> tuple[bytes, bytes]:
    n = len(registers)
    return struct.pack(f">{n}H", *registers), struct.pack(f"<{n}H", *registers)


def decode(registers: Sequence[int], dtype: DataType, byte_order: ByteOrder = ByteOrder.BIG,
           word_order: WordOrder = WordOrder.BIG, bit: int | None = None) -> float:
    """Decode one raw value (no scale) from the first registers given. NaN stays NaN here."""
    if dtype is DataType.BOOL:
        return float(bool(registers[0]))
    width = dtype.registers
    if len(registers) < width:
        raise ValueError(f"{dtype} needs {width} registers, got {len(registers)}")
    swapped, endian = layout(dtype, byte_order, word_order)
    buf = _buffers(registers[:width])[1 if swapped else 0]
    (raw,) = struct.unpack(endian + _CODE[dtype], buf)
    if dtype is DataType.BITFIELD:
        assert bit is not None
        return float((raw >> bit) & 1)
    return float(raw)


def encode(value: float, dtype: DataType, byte_order: ByteOrder = ByteOrder.BIG,
           word_order: WordOrder = WordOrder.BIG) -> list[int]:
    """The registers a device would hold for `value` (raw, no scale). Inverse of `decode`."""
    if dtype in (DataType.BOOL, DataType.BITFIELD):
        raise ValueError(f"encode {dtype} by setting the bit yourself")
    swapped, endian = layout(dtype, byte_order, word_order)
    raw = value if dtype in _FLOATS else int(value)
    buf = struct.pack(endian + _CODE[dtype], raw)
    n = dtype.registers
    return list(struct.unpack(f"{'<' if swapped else '>'}{n}H", buf))


@dataclass(frozen=True, slots=True)
class Field:
    """Where one point sits in a block (offset in registers) and how to scale it."""

    offset: int
    dtype: DataType
    byte_order: ByteOrder = ByteOrder.BIG
    word_order: WordOrder = WordOrder.BIG
    bit: int | None = None
    scale: float = 1.0
    add: float = 0.0


class _Group:
    """Non-overlapping fields read by one struct from one buffer layout."""

    __slots__ = ("end", "fmt", "slots", "swapped")

    def __init__(self, swapped: bool, endian: str) -> None:
        self.swapped = swapped
        self.fmt = endian
        self.end = 0  # next free byte
        self.slots: list[int] = []  # index of each unpacked value in the block's output


class BlockDecoder:
    """Decodes all points of one register block: `decode(registers) -> values`.

    A value is None when the device reports NaN (its way to say "no valid reading").
    """

    def __init__(self, fields: Sequence[Field]) -> None:
        self._size = len(fields)
        groups: list[_Group] = []
        self._bits: list[tuple[int, int, int, bool]] = []  # (slot, offset, bit, swapped)
        for slot, f in sorted(enumerate(fields), key=lambda x: x[1].offset):
            if f.dtype is DataType.BITFIELD:
                assert f.bit is not None
                self._bits.append((slot, f.offset, f.bit, f.byte_order is ByteOrder.LITTLE))
                continue
            if f.dtype is DataType.BOOL:
                raise ValueError("bool points belong to a bit block")
            swapped, endian = layout(f.dtype, f.byte_order, f.word_order)
            start = f.offset * 2
            group = next((g for g in groups if g.swapped == swapped and g.fmt[0] == endian
                          and g.end <= start), None)
            if group is None:
                group = _Group(swapped, endian)
                groups.append(group)
            group.fmt += f"{start - group.end}x{_CODE[f.dtype]}"
            group.end = start + 2 * f.dtype.registers
            group.slots.append(slot)
        self._groups = [(struct.Struct(g.fmt).unpack_from, g.swapped, g.slots) for g in groups]
        self._need_swapped = any(g.swapped for g in groups)
        # Every value leaves as a float (raw * scale + add); NaN floats leave as None.
        self._post = [(slot, f.scale, f.add, f.dtype in _FLOATS) for slot, f in enumerate(fields)]

    def decode(self, registers: Sequence[int]) -> list[float | None]:
        n = len(registers)
        out: list[float | None] = [None] * self._size
        plain = struct.pack(f">{n}H", *registers)
        swapped = struct.pack(f"<{n}H", *registers) if self._need_swapped else plain
        for unpack, use_swapped, slots in self._groups:
            for slot, raw in zip(slots, unpack(swapped if use_swapped else plain), strict=True):
                out[slot] = raw
        for slot, offset, bit, swap in self._bits:
            reg = registers[offset]
            if swap:
                reg = ((reg & 0xFF) << 8) | (reg >> 8)
            out[slot] = (reg >> bit) & 1
        for slot, scale, add, is_float in self._post:
            v = out[slot]
            if v is None:
                continue
            if is_float and math.isnan(v):
                out[slot] = None
            else:
                out[slot] = v * scale + add
        return out


def decode_bits(bits: Sequence[bool] | Sequence[int], offsets: Sequence[int],
                scales: Sequence[tuple[float, float]] | None = None) -> list[float | None]:
    """Values of bit points (coils, discrete inputs) at `offsets` in a bit block."""
    if scales is None:
        return [1.0 if bits[o] else 0.0 for o in offsets]
    return [(1.0 if bits[o] else 0.0) * s + a for o, (s, a) in zip(offsets, scales, strict=True)]
