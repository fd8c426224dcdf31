"""The coalescing planner and the config model, without any socket."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.modbus.config import DataType, ModbusSourceConfig, Point, Table
from drivers.modbus.driver import ModbusSource
from drivers.modbus.planner import explain, plan, plan_source

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "source-modbus.toml"


def pt(address: int, dtype: DataType = DataType.UINT16, table: Table = Table.HOLDING,
       name: str | None = None) -> Point:
    return Point(signal=name or f"s{table}{address}", table=table, address=address, type=dtype)


def spans(reads: list[Any]) -> list[tuple[str, int, int]]:
    return [(str(r.table), r.start, r.count) for r in reads]


def test_adjacent_points_make_one_read() -> None:
    points = [pt(0, DataType.FLOAT32), pt(2), pt(3, DataType.INT64)]
    reads = plan(points, max_gap=0)
    assert spans(reads) == [("holding", 0, 7)]
    assert reads[0].offsets == (0, 2, 3)


def test_gap_within_limit_is_filled_beyond_is_split() -> None:
    points = [pt(0), pt(5), pt(20)]  # holes of 4 and 14 registers
    assert spans(plan(points, max_gap=4)) == [("holding", 0, 6), ("holding", 20, 1)]
    assert spans(plan(points, max_gap=3)) == [("holding", 0, 1), ("holding", 5, 1),
                                              ("holding", 20, 1)]
    assert spans(plan(points, max_gap=14)) == [("holding", 0, 21)]


def test_register_limit_splits_and_never_cuts_a_value() -> None:
    points = [pt(a, DataType.FLOAT32) for a in range(0, 300, 2)]  # 300 registers back to back
    reads = plan(points, max_gap=10)
    assert [r.count for r in reads] == [124, 124, 52]  # 62 floats fit in 125 registers
    assert all(r.count <= 125 for r in reads)
    assert sum(len(r.points) for r in reads) == 150
    assert spans(plan(points, max_gap=10, max_registers=10))[0] == ("holding", 0, 10)


def test_bits_coalesce_up_to_2000() -> None:
    coils = [pt(a, DataType.BOOL, Table.COIL) for a in range(0, 4100, 2)]
    reads = plan(coils, max_gap=1)
    assert [r.count for r in reads] == [1999, 1999, 99]  # 1000 + 1000 + 50 coils
    assert plan(coils, max_gap=0)[0].count == 1


def test_tables_never_mix_and_order_is_stable() -> None:
    points = [pt(0, table=Table.INPUT), pt(1), pt(0, DataType.BOOL, Table.DISCRETE),
              pt(1, DataType.BOOL, Table.COIL)]
    assert spans(plan(points, max_gap=10)) == [("coil", 1, 1), ("discrete", 0, 1),
                                               ("holding", 1, 1), ("input", 0, 1)]


def test_overlapping_points_share_registers() -> None:
    points = [Point(signal="status", table=Table.HOLDING, address=10, type=DataType.UINT16),
              Point(signal="run", table=Table.HOLDING, address=10, type=DataType.BITFIELD, bit=0),
              Point(signal="wide", table=Table.HOLDING, address=9, type=DataType.UINT32)]
    reads = plan(points, max_gap=0)
    assert spans(reads) == [("holding", 9, 2)]
    assert sorted(reads[0].offsets) == [0, 1, 1]


def example_raw() -> dict[str, Any]:
    with EXAMPLE.open("rb") as f:
        raw: dict[str, Any] = tomllib.load(f)["sources"][0]
    return raw


def test_example_config_loads_builds_and_explains() -> None:
    cfg = ModbusSourceConfig.model_validate(example_raw())
    assert isinstance(cfg.build(), ModbusSource)
    plans = plan_source(cfg)
    assert plans[1] is plans[2]  # a shared map is planned once
    assert {u: len(r) for u, r in plans.items()} == {1: 3, 2: 3, 3: 2}
    text = explain(cfg)
    assert "unit 3 (fan-1, map 'fan-vfd'): 4 points in 2 requests every 500 ms" in text
    assert "FC03 holding 100..103 (4 registers, 1 unused): temperature, current" in text
    assert "total: 12 points, 10.0 requests/s" in text


@pytest.mark.parametrize(("change", "message"), [
    ({"devices": [{"unit_id": 1, "asset": "a", "map": "nope"}]}, "unknown map 'nope'"),
    ({"devices": [{"unit_id": 1, "map": "pump-drive"}]}, "no asset"),
    ({"devices": [{"unit_id": 1, "asset": "a", "map": "pump-drive"},
                  {"unit_id": 1, "asset": "b", "map": "pump-drive"}]}, "appears twice"),
    ({"devices": [{"unit_id": 1, "asset": "a", "map": "pump-drive"},
                  {"unit_id": 2, "asset": "a", "map": "pump-drive"}]}, "mapped twice"),
    ({"transport": "rtu"}, "needs [serial]"),
    ({"poll_interval": 5}, "Extra inputs are not permitted"),
    ({"maps": {"m": {"points": [{"signal": "x", "table": "coil", "address": 0,
                                 "type": "int16"}]}}}, "holds bits"),
    ({"maps": {"m": {"points": [{"signal": "x", "table": "holding", "address": 0,
                                 "type": "bitfield"}]}}}, "`bit` goes with type bitfield"),
    ({"maps": {"m": {"points": [{"signal": "x", "table": "holding", "address": 65535,
                                 "type": "float32"}]}}}, "runs past address 65535"),
    ({"devices": [{"unit_id": 1, "asset": "a"}]}, "give a map or points"),
    ({"connections": 4}, "exceeds the number of devices"),
    ({"transport": "rtu", "serial": {"port": "/dev/ttyS0"}, "connections": 2},
     "connections must be 1"),
])
def test_config_errors_say_what_is_wrong(change: dict[str, Any], message: str) -> None:
    raw = example_raw() | change
    with pytest.raises(ValidationError, match=message.replace("[", r"\[")):
        ModbusSourceConfig.model_validate(raw)


def test_inline_points_with_per_point_asset() -> None:
    raw = example_raw()
    raw["devices"] = [{"unit_id": 4, "points": [
        {"signal": "hours", "asset": "fan-1-motor", "table": "input", "address": 20,
         "type": "uint32"}]}]
    cfg = ModbusSourceConfig.model_validate(raw)
    assert "unit 4 (per-point assets, inline points)" in explain(cfg)


def test_explain_mentions_several_connections() -> None:
    cfg = ModbusSourceConfig.model_validate(example_raw() | {"connections": 3})
    assert "tcp 127.0.0.1:5020, 3 connections, max gap 10" in explain(cfg)


def test_rtu_config_needs_serial_settings() -> None:
    raw = example_raw() | {"transport": "rtu"}
    with pytest.raises(ValidationError, match="needs \\[serial\\] settings"):
        ModbusSourceConfig.model_validate(raw)
