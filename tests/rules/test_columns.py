"""Columns and the .pbrec recording format: exact round trips, power-loss tails, damage named."""

from __future__ import annotations

import csv
import itertools
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Quality, Sample
from rules.columns import NO_VALUE, Columns, columns_from_samples, concat
from rules.pbrec import RecordingWriter, iter_columns, load_columns, read_columns, write_columns
from rules.recording import RecordingError, write_jsonl

HEADER = 16
ODD = [None, math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 3.25]


def bits(x: float | None) -> bytes | None:
    return None if x is None else struct.pack("<d", x)


def assert_same(got: list[Sample], want: list[Sample]) -> None:
    """Field by field, values by their bits: NaN payloads and -0.0 count."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.asset, g.signal, g.quality, bits(g.value), bits(g.source_ts)) == (
            w.asset, w.signal, w.quality, bits(w.value), bits(w.source_ts))
        assert type(g.quality) is Quality


def odd_samples() -> list[Sample]:
    """Every quality with every awkward value, unicode names, a NaN with a payload."""
    weird_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_0000_0BAD))[0]
    out = []
    t = 1_700_000_000.25
    for q in Quality:
        for v in [*ODD, weird_nan]:
            out.append(Sample("Pumpe-Süd ⚙", "Schwingung µm/s", v, q, t))
            out.append(Sample("炉-1", "temp", v, q, -t))
            t += 0.001
    return out


def blocks_of(path: Path) -> list[int]:
    """Byte offsets of the blocks of a well-formed .pbrec file."""
    raw = path.read_bytes()
    offsets, off = [], HEADER
    while off < len(raw):
        offsets.append(off)
        _, n, m, _, _ = struct.unpack_from("<4sIIII", raw, off)
        off += 20 + m + 21 * n
    assert off == len(raw)
    return offsets


def write(path: Path, samples: list[Sample], block_samples: int) -> Path:
    with RecordingWriter(path, block_samples=block_samples) as w:
        for s in samples:
            w.write(s)
    return path


# --- Columns in memory ------------------------------------------------------------------


def test_columns_from_samples_round_trips_exactly() -> None:
    xs = odd_samples()
    cols = columns_from_samples(xs)
    assert_same(list(cols.samples()), xs)
    assert cols.keys == (("Pumpe-Süd ⚙", "Schwingung µm/s"), ("炉-1", "temp"))
    assert len(cols) == len(xs)
    # None is told apart from NaN by the NO_VALUE bit, whatever the quality
    assert [bool(q & NO_VALUE) for q in cols.quality] == [s.value is None for s in xs]


def test_samples_made_with_math_nan_compare_equal_after_the_round_trip() -> None:
    xs = [Sample("a", "s", v, q, 1.0) for q in Quality for v in ODD]
    assert list(columns_from_samples(xs).samples()) == xs


def test_concat_renumbers_keys_in_order_of_first_appearance() -> None:
    a = [Sample("p1", "v", 1.0, Quality.GOOD, 1), Sample("p2", "v", 2.0, Quality.GOOD, 2)]
    b = [Sample("p3", "v", 3.0, Quality.BAD, 3), Sample("p1", "v", None, Quality.BAD, 4)]
    both = concat([columns_from_samples(a), columns_from_samples(b)])
    assert both.keys == (("p1", "v"), ("p2", "v"), ("p3", "v"))
    assert both.key.tolist() == [0, 1, 2, 0]
    assert both == columns_from_samples(a + b)
    assert len(concat([])) == 0


def test_columns_refuse_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="ts"):
        Columns((), np.zeros(2, np.uint32), np.zeros(1), np.zeros(2), np.zeros(2, np.uint8))
    with pytest.raises(TypeError, match="key"):
        Columns((), np.zeros(2, np.int64), np.zeros(2), np.zeros(2),
                np.zeros(2, np.uint8))


# --- .pbrec round trips -----------------------------------------------------------------


def test_file_round_trip_keeps_every_quality_and_odd_value(tmp_path: Path) -> None:
    xs = odd_samples()
    path = write(tmp_path / "odd.pbrec", xs, block_samples=5)
    assert len(blocks_of(path)) == math.ceil(len(xs) / 5)
    back = read_columns(path)
    assert back.warning is None
    assert_same(list(back.samples()), xs)
    assert back == columns_from_samples(xs)


def test_many_keys_across_small_blocks(tmp_path: Path) -> None:
    xs = [Sample(f"asset-{i % 97}", f"signal-{i % 13}", float(i), Quality(i % 3), i * 0.5)
          for i in range(3000)]
    path = write(tmp_path / "many.pbrec", xs, block_samples=7)
    back = read_columns(path)
    assert len(back.keys) == len({(s.asset, s.signal) for s in xs})
    assert back == columns_from_samples(xs)
    assert_same(list(back.samples()), xs)


def test_write_columns_keeps_keys_without_samples(tmp_path: Path) -> None:
    cols = Columns((("a", "x"), ("b", "y"), ("unused", "z")), np.array([1, 0, 1], np.uint32),
                   np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]),
                   np.zeros(3, np.uint8))
    assert write_columns(tmp_path / "c.pbrec", cols, block_samples=2) == 3
    assert read_columns(tmp_path / "c.pbrec") == cols
    bad = Columns((("a", "x"),), np.array([1], np.uint32), np.zeros(1), np.zeros(1),
                  np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="key number"):
        write_columns(tmp_path / "bad.pbrec", bad)
    bad = Columns((("a", "x"),), np.array([0], np.uint32), np.zeros(1), np.zeros(1),
                  np.array([3], np.uint8))
    with pytest.raises(ValueError, match="quality"):
        write_columns(tmp_path / "bad.pbrec", bad)
    assert read_columns(tmp_path / "bad.pbrec").keys == ()  # refused before anything was kept


def test_samples_and_columns_written_to_one_recording_keep_their_order(tmp_path: Path) -> None:
    first = [Sample("b", "s", 1.0, Quality.GOOD, 1.0), Sample("c", "s", None, Quality.BAD, 2.0)]
    more = [Sample("c", "s", 3.0, Quality.GOOD, 3.0), Sample("a", "s", 4.0, Quality.GOOD, 4.0),
            Sample("b", "s", 5.0, Quality.UNCERTAIN, 5.0)]
    with RecordingWriter(tmp_path / "mix.pbrec", block_samples=2) as w:
        for s in first:
            w.write(s)
        w.write_columns(columns_from_samples(more))
        w.write(first[0])
    assert w.samples_written == 6
    assert list(read_columns(tmp_path / "mix.pbrec").samples()) == [*first, *more, first[0]]


def test_a_flushed_recording_is_readable_while_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.pbrec"
    with RecordingWriter(path) as w:
        w.write(Sample("a", "s", 1.0, Quality.GOOD, 1.0))
        assert len(read_columns(path)) == 0  # buffered, not yet a block
        w.flush()
        now = read_columns(path)
        assert (len(now), now.warning) == (1, None)
        w.write(Sample("b", "s", 2.0, Quality.GOOD, 2.0))
    assert read_columns(path).keys == (("a", "s"), ("b", "s"))
    with pytest.raises(ValueError, match="closed"):
        w.write_columns(now)


def test_empty_recording(tmp_path: Path) -> None:
    path = tmp_path / "empty.pbrec"
    RecordingWriter(path).close()
    back = read_columns(path)
    assert (len(back), back.keys, back.warning) == (0, (), None)
    assert list(back.samples()) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "ü", "c d"]), st.sampled_from(["s", "t"]),
                          st.none() | st.floats(), st.sampled_from(list(Quality)),
                          st.floats(allow_nan=False)), max_size=40),
       st.integers(1, 9))
def test_any_samples_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                rows: list[tuple[str, str, float | None, Quality, float]],
                                block_samples: int) -> None:
    xs = [Sample(*row) for row in rows]
    path = write(tmp_path_factory.mktemp("h") / "h.pbrec", xs, block_samples)
    assert_same(list(read_columns(path).samples()), xs)


# --- power loss and damage --------------------------------------------------------------


def test_a_cut_off_tail_keeps_every_complete_block(tmp_path: Path) -> None:
    xs = [Sample(f"p{i % 3}", "v", float(i), Quality.GOOD, float(i)) for i in range(10)]
    path = write(tmp_path / "full.pbrec", xs, block_samples=4)
    raw = path.read_bytes()
    starts = blocks_of(path)  # blocks of 4, 4 and 2 samples
    cut = tmp_path / "cut.pbrec"
    for at in range(HEADER, len(raw)):
        cut.write_bytes(raw[:at])
        back = read_columns(cut)
        whole = sum(1 for s in starts if s < at) - (at not in starts)
        complete = min(4 * whole, 10)
        assert_same(list(back.samples()), xs[:complete])
        if at in starts:
            assert back.warning is None
        else:
            block = max(s for s in starts if s < at)
            assert back.warning == (f"{cut}: recording ends in a cut-off block at byte {block}; "
                                    f"{complete} samples read")


def test_a_cut_off_header_reads_as_empty_with_a_warning(tmp_path: Path) -> None:
    raw = write(tmp_path / "full.pbrec", [], 4).read_bytes()
    cut = tmp_path / "cut.pbrec"
    for at in (0, 1, 8, HEADER - 1):
        cut.write_bytes(raw[:at])
        back = read_columns(cut)
        assert len(back) == 0 and back.warning is not None and "cut-off header" in back.warning


def test_a_zero_filled_tail_is_a_cut_not_damage(tmp_path: Path) -> None:
    xs = [Sample("a", "v", float(i), Quality.GOOD, float(i)) for i in range(8)]
    path = write(tmp_path / "z.pbrec", xs, block_samples=4)
    second = blocks_of(path)[1]
    raw = path.read_bytes()
    path.write_bytes(raw[:second] + bytes(len(raw) - second + 100))  # never reached the disk
    back = read_columns(path)
    assert len(back) == 4 and f"cut-off block at byte {second}" in (back.warning or "")
    path.write_bytes(raw[:second + 30] + bytes(len(raw) - second - 30))  # zeros inside the block
    back = read_columns(path)
    assert len(back) == 4 and f"damaged block at byte {second}" in (back.warning or "")


def damage(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["marker", "count", "meta", "payload"])
def test_a_damaged_middle_block_is_named_by_its_offset(tmp_path: Path, where: str) -> None:
    xs = [Sample(f"p{i}", "v", float(i), Quality.GOOD, float(i)) for i in range(12)]
    path = write(tmp_path / "rec.pbrec", xs, block_samples=4)
    block = blocks_of(path)[1]
    damage(path, block + {"marker": 1, "count": 4, "meta": 25, "payload": 80}[where])
    with pytest.raises(RecordingError) as err:
        read_columns(path)
    assert str(err.value).startswith(f"{path}: byte {block}: ")
    assert "damaged" in str(err.value)


def test_a_damaged_last_block_is_dropped_with_a_warning(tmp_path: Path) -> None:
    xs = [Sample("a", "v", float(i), Quality.GOOD, float(i)) for i in range(6)]
    path = write(tmp_path / "rec.pbrec", xs, block_samples=4)
    last = blocks_of(path)[-1]
    damage(path, path.stat().st_size - 3)
    back = read_columns(path)
    assert len(back) == 4 and back.warning is not None
    assert f"damaged block at byte {last}" in back.warning


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "rec.pbrec"
    for junk in (b'{"asset": "a", "signal": "s"}\n', b"\x89PNG\r\n\x1a\n" + bytes(40)):
        path.write_bytes(junk)
        with pytest.raises(RecordingError, match=r"rec\.pbrec: byte 0: this is not a Plant"):
            read_columns(path)
    raw = bytearray(write(path, [], 4).read_bytes())
    raw[8] = 2
    path.write_bytes(bytes(raw))
    with pytest.raises(RecordingError, match="byte 8: recording format version 2"):
        read_columns(path)


# --- the same samples in every format ---------------------------------------------------


def test_jsonl_csv_and_pbrec_of_the_same_samples_give_equal_columns(tmp_path: Path) -> None:
    xs = [Sample(f"pump-{i % 4}", ["vibration", "temp"][i % 2],
                 None if i % 7 == 3 else i / 3 - 5, Quality(i % 3), 1_700_000_000 + i / 10)
          for i in range(200)]
    write_jsonl(tmp_path / "r.jsonl", xs)
    with (tmp_path / "r.csv").open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["asset", "signal", "value", "quality", "ts"])
        for s in xs:
            out.writerow([s.asset, s.signal, "" if s.value is None else repr(s.value),
                          s.quality.name, repr(s.source_ts)])
    write(tmp_path / "r.pbrec", xs, 16)
    want = columns_from_samples(xs)
    for name in ("r.jsonl", "r.csv", "r.pbrec"):
        assert load_columns(tmp_path / name) == want, name


def test_load_columns_keeps_the_text_readers_messages(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"asset":"a","signal":"s","value":1,"ts":0}\n{oops\n')
    with pytest.raises(RecordingError, match=r"bad\.jsonl:2: "):
        load_columns(path)


# --- read in parts (iter_columns: what a streamed replay reads) -----------------------------


@pytest.mark.parametrize("slab", [1, 4, 5, 9, 100])
def test_parts_are_whole_blocks_in_order_with_the_keys_known_so_far(tmp_path: Path,
                                                                     slab: int) -> None:
    xs = [Sample(f"p{i % 5 if i < 12 else i}", "v", float(i), Quality.GOOD, float(i))
          for i in range(30)]  # new keys keep coming
    path = write(tmp_path / "rec.pbrec", xs, block_samples=4)
    parts = list(iter_columns(path, slab))
    assert [len(p) for p in parts[:-1]] == [max(4, -(-slab // 4) * 4)] * (len(parts) - 1)
    for before, after in itertools.pairwise(parts):
        assert after.keys[:len(before.keys)] == before.keys  # numbers stay valid
    assert concat(parts) == read_columns(path)
    assert [s for p in parts for s in p.samples()] == xs


def test_a_cut_tail_is_named_in_the_last_part(tmp_path: Path) -> None:
    xs = [Sample("a", "v", float(i), Quality.GOOD, float(i)) for i in range(10)]
    path = write(tmp_path / "rec.pbrec", xs, block_samples=4)
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])
    parts = list(iter_columns(path, 4))
    assert [len(p) for p in parts] == [4, 4]
    assert parts[0].warning is None
    assert parts[-1].warning is not None and "8 samples read" in parts[-1].warning


def test_a_damaged_middle_payload_stops_the_parts_where_it_is(tmp_path: Path) -> None:
    xs = [Sample("a", "v", float(i), Quality.GOOD, float(i)) for i in range(12)]
    path = write(tmp_path / "rec.pbrec", xs, block_samples=4)
    block = blocks_of(path)[1]
    damage(path, block + 80)
    parts = iter_columns(path, 4)
    assert len(next(parts)) == 4  # the part before the damage
    with pytest.raises(RecordingError, match=f"byte {block}: the block there is damaged"):
        next(parts)
