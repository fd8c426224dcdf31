"""Golden table: known values as big-endian bytes, laid out in each order by byte shuffling
(independent of the codec's struct tricks), plus literal anchors for the shuffles themselves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import BlockDecoder, Field, decode, encode
from drivers.modbus.config import ByteOrder, DataType, WordOrder

B, L = ByteOrder.BIG, ByteOrder.LITTLE
WB, WL = WordOrder.BIG, WordOrder.LITTLE
ORDERS = [(B, WB), (L, WL), (L, WB), (B, WL)]  # ABCD, DCBA, BADC, CDAB

GOLDEN: list[tuple[DataType, str, float]] = [
    (DataType.INT16, "0000", 0), (DataType.INT16, "0001", 1), (DataType.INT16, "FFFF", -1),
    (DataType.INT16, "8000", -32768), (DataType.INT16, "7FFF", 32767),
    (DataType.INT16, "FF85", -123),
    (DataType.UINT16, "FFFF", 65535), (DataType.UINT16, "1234", 0x1234),
    (DataType.UINT16, "8000", 32768),
    (DataType.INT32, "FFFFFFFE", -2), (DataType.INT32, "12345678", 0x12345678),
    (DataType.INT32, "80000000", -(2**31)), (DataType.INT32, "7FFFFFFF", 2**31 - 1),
    (DataType.UINT32, "FFFFFFFF", 2**32 - 1), (DataType.UINT32, "12345678", 0x12345678),
    (DataType.INT64, "FFFFFFFFFFFFFFFF", -1),
    # Values leave as floats: 64-bit integers keep 53 bits of precision.
    (DataType.INT64, "0123456789ABCDEF", float(0x0123456789ABCDEF)),
    (DataType.INT64, "8000000000000000", -(2**63)),
    (DataType.INT64, "FFFFFFFFFFFFFF85", -123),
    (DataType.UINT64, "FFFFFFFFFFFFFFFF", float(2**64 - 1)),
    (DataType.UINT64, "0123456789ABCDEF", float(0x0123456789ABCDEF)),
    (DataType.FLOAT32, "3FC00000", 1.5), (DataType.FLOAT32, "C0200000", -2.5),
    (DataType.FLOAT32, "3DCCCCCD", 0.10000000149011612), (DataType.FLOAT32, "00000000", 0.0),
    (DataType.FLOAT32, "7F800000", math.inf), (DataType.FLOAT32, "FF800000", -math.inf),
    (DataType.FLOAT32, "7FC00000", math.nan), (DataType.FLOAT32, "FFC00001", math.nan),
    (DataType.FLOAT64, "3FF8000000000000", 1.5), (DataType.FLOAT64, "C004000000000000", -2.5),
    (DataType.FLOAT64, "3FB999999999999A", 0.1),
    (DataType.FLOAT64, "7FF0000000000000", math.inf),
    (DataType.FLOAT64, "FFF0000000000000", -math.inf),
    (DataType.FLOAT64, "7FF8000000000000", math.nan),
]


def lay_out(big_hex: str, byte_order: ByteOrder, word_order: WordOrder) -> list[int]:
    """Registers a device in this order would hold, by shuffling bytes."""
    data = bytes.fromhex(big_hex)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order is WL:
        words.reverse()
    if byte_order is L:
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def same(got: float | None, want: float) -> bool:
    if got is None:
        return math.isnan(want)
    return (math.isnan(got) and math.isnan(want)) or got == want


def test_layout_anchors() -> None:
    """The shuffle itself, against register values written out by hand."""
    assert lay_out("3FC00000", B, WB) == [0x3FC0, 0x0000]
    assert lay_out("3FC00000", L, WL) == [0x0000, 0xC03F]
    assert lay_out("3FC00000", L, WB) == [0xC03F, 0x0000]
    assert lay_out("3FC00000", B, WL) == [0x0000, 0x3FC0]
    assert lay_out("0123456789ABCDEF", B, WL) == [0xCDEF, 0x89AB, 0x4567, 0x0123]
    assert lay_out("0123456789ABCDEF", L, WB) == [0x2301, 0x6745, 0xAB89, 0xEFCD]


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS,
                         ids=["ABCD", "DCBA", "BADC", "CDAB"])
@pytest.mark.parametrize(("dtype", "big_hex", "want"), GOLDEN,
                         ids=[f"{t}-{h}" for t, h, _ in GOLDEN])
def test_golden(dtype: DataType, big_hex: str, want: float, byte_order: ByteOrder,
                word_order: WordOrder) -> None:
    regs = lay_out(big_hex, byte_order, word_order)  # word order is moot for one register
    assert same(decode(regs, dtype, byte_order, word_order), want)
    # The block decoder, with the value placed after a filler register.
    block = BlockDecoder([Field(1, dtype, byte_order, word_order)])
    (got,) = block.decode([0xDEAD, *regs])
    assert same(got, want)
    if math.isnan(want):
        assert got is None  # a NaN reading is no reading


def test_literal_int32_negative_in_every_order() -> None:
    assert decode([0xFFFF, 0xFFFE], DataType.INT32, B, WB) == -2
    assert decode([0xFFFE, 0xFFFF], DataType.INT32, B, WL) == -2
    assert decode([0xFEFF, 0xFFFF], DataType.INT32, L, WL) == -2
    assert decode([0xFFFF, 0xFEFF], DataType.INT32, L, WB) == -2


@pytest.mark.parametrize(("reg", "bit", "order", "want"), [
    (0x0008, 3, B, 1), (0x0008, 2, B, 0), (0x8000, 15, B, 1), (0x8000, 0, B, 0),
    (0x0800, 3, L, 1), (0x0001, 8, L, 1), (0xFFF7, 3, B, 0),
])
def test_bitfield(reg: int, bit: int, order: ByteOrder, want: int) -> None:
    assert decode([reg], DataType.BITFIELD, order, bit=bit) == want
    (got,) = BlockDecoder([Field(0, DataType.BITFIELD, order, bit=bit)]).decode([reg])
    assert got == want


def test_block_mixes_orders_overlaps_and_scaling() -> None:
    regs = [0x3FC0, 0x0000, 0x00C8, 0xFF85, 0x0000, 0x3FC0, 0x000A]
    fields = [
        Field(0, DataType.FLOAT32),  # 1.5
        Field(2, DataType.UINT16, scale=0.1),  # 200 -> 20.0
        Field(3, DataType.INT16, scale=2.0, add=1.0),  # -123 -> -245
        Field(4, DataType.FLOAT32, word_order=WL),  # CDAB 1.5
        Field(6, DataType.BITFIELD, bit=1),  # 0x000A bit 1 -> 1
        Field(6, DataType.UINT16),  # overlaps the bitfield: 10
        Field(2, DataType.UINT32),  # overlaps two points: 0x00C8FF85
        Field(0, DataType.FLOAT32, byte_order=L, word_order=WL),  # 0x0000C03F as DCBA bytes
    ]
    got = BlockDecoder(fields).decode(regs)
    assert got[:7] == [1.5, pytest.approx(20.0), -245.0, 1.5, 1.0, 10.0, float(0x00C8FF85)]
    assert got[7] == decode([0x3FC0, 0x0000], DataType.FLOAT32, L, WL)
    assert all(isinstance(v, float) for v in got)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(value=st.integers(-(2**31), 2**31 - 1))
def test_int32_round_trip(value: int, byte_order: ByteOrder, word_order: WordOrder) -> None:
    regs = encode(value, DataType.INT32, byte_order, word_order)
    assert decode(regs, DataType.INT32, byte_order, word_order) == value


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@given(value=st.floats(allow_nan=False, width=64))
def test_float64_round_trip(value: float, byte_order: ByteOrder, word_order: WordOrder) -> None:
    regs = encode(value, DataType.FLOAT64, byte_order, word_order)
    assert decode(regs, DataType.FLOAT64, byte_order, word_order) == value
    assert regs == lay_out(regs_hex(value), byte_order, word_order)


def regs_hex(value: float) -> str:
    import struct

    return struct.pack(">d", value).hex()


_NUMERIC = [t for t in DataType if t not in (DataType.BOOL, DataType.BITFIELD)]


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[Field], list[int]]:
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=40))
    fields = []
    for _ in range(draw(st.integers(1, 12))):
        dtype = draw(st.sampled_from([*_NUMERIC, DataType.BITFIELD]))
        offset = draw(st.integers(0, len(regs) - dtype.registers))
        fields.append(Field(offset, dtype, draw(st.sampled_from(list(ByteOrder))),
                            draw(st.sampled_from(list(WordOrder))),
                            draw(st.integers(0, 15)) if dtype is DataType.BITFIELD else None,
                            draw(st.sampled_from([1.0, 0.1, -2.0])),
                            draw(st.sampled_from([0.0, 5.0]))))
    return fields, regs


@given(blocks())
def test_block_decoder_agrees_with_single_value_decode(case: tuple[list[Field], list[int]]
                                                       ) -> None:
    """The fast path (grouped structs, overlaps) against the plain one, field by field."""
    fields, regs = case
    got = BlockDecoder(fields).decode(regs)
    for f, value in zip(fields, got, strict=True):
        raw = decode(regs[f.offset:], f.dtype, f.byte_order, f.word_order, f.bit)
        if math.isnan(raw):
            assert value is None
        else:
            assert value == raw * f.scale + f.add
