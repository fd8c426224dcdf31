"""Batched payloads: decoding readings a payload at a time changes nothing but the cost.

The codec decodes a JSON array in one pass into columns and has the source clock stamp all its
device times in one call (`SourceClock.stamp_all`). Both are checked against the plain way, one
reading and one `stamp` at a time (`_one_by_one` below is that decoder, kept as the oracle): the
same samples in the same order, the same rejections with the same reasons, the same clock
verdicts and counts, for arbitrary mixes of good and bad readings and clock skews.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.mqtt.codec import PayloadDecoder
from drivers.mqtt.config import PayloadOptions
from drivers.mqtt.values import (
    MISSING,
    Reason,
    Rejected,
    get_path,
    name_of,
    to_number,
    to_quality,
    to_timestamp,
)
from gateway.model import Quality, Sample
from gateway.timebase import SourceClock, TimestampPolicy

NOW = 1_750_000_000.0


def _one_by_one(items: list[Any], options: PayloadOptions, clock: SourceClock,
                asset: str | None, signal: str | None,
                received: float) -> tuple[list[Sample], list[str]]:
    """The `json` format one reading at a time: each check, then `clock.stamp`, in order."""
    samples: list[Sample] = []
    reasons: list[str] = []

    def get(item: dict[str, Any], spec: str | None) -> object:
        return MISSING if spec is None else get_path(item, tuple(spec.split(".")))

    def named(item: dict[str, Any], spec: str | None, fallback: str | None,
              reason: Reason) -> str | None:
        raw = get(item, spec)
        if spec is None or (raw is MISSING and fallback is not None):
            return fallback
        return name_of(raw, reason)

    for item in items:
        try:
            a, g = asset, signal
            if not isinstance(item, dict):
                stamped: tuple[float, float | None] = (received, None)
                value, quality = to_number(item), Quality.GOOD
            else:
                raw = get(item, options.value_path)
                if raw is MISSING:
                    raise Rejected(Reason.NO_VALUE)
                device = None
                raw_ts = get(item, options.timestamp_path)
                if raw_ts is not MISSING and raw_ts is not None:
                    got = to_timestamp(raw_ts, options.timestamp_unit)
                    device = got if isinstance(got, float) else clock.localize(got, received)
                raw_q = get(item, options.quality_path)
                quality = Quality.GOOD if raw_q is MISSING else to_quality(raw_q)
                stamped = clock.stamp(device, received)
                a = named(item, options.asset_path, asset, Reason.NO_ASSET)
                g = named(item, options.signal_path, signal, Reason.NO_SIGNAL)
                value = to_number(raw)
            if not a:
                raise Rejected(Reason.NO_ASSET)
            if not g:
                raise Rejected(Reason.NO_SIGNAL)
            if value is None or quality is Quality.BAD:
                value, quality = None, Quality.BAD
            samples.append(Sample(a, g, value, quality, *stamped))
        except Rejected as exc:
            reasons.append(exc.reason.value)
    return samples, reasons


_numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**20, 10**20)
            | st.booleans() | st.none())
_times = st.one_of(
    st.floats(NOW - 120, NOW + 120), st.floats(NOW - 20_000, NOW - 10_000),
    st.sampled_from([NOW * 1000, int(NOW), int(NOW * 1e9), 5e10, 0.0, -5, None, True, math.nan,
                     "2025-06-15T15:06:40Z", "2025-06-15T17:06:40", "1750000000.5", "soon"]))
_object = st.fixed_dictionaries(
    {"value": _numbers | st.sampled_from(["3.5", "NaN", "abc", "TRUE", "1e999"]),
     "ts": _times},
    optional={
        "q": st.sampled_from(["good", "GOOD", "OK", "BAD", "uncertain", "Ok", " bad ", "meh", 1,
                              2, False]),
        "sig": st.sampled_from(["vibration", "", 7, [], None]),
        "asset": st.sampled_from(["pump-9", ""]),
    })
# mostly objects with a value and a time; some with neither, some bare numbers
_reading = st.one_of(_object, _object, _object,
                     _object.map(lambda o: {k: v for k, v in o.items() if k not in "value ts"}),
                     _numbers)
_options = st.fixed_dictionaries({"timestamp_path": st.sampled_from(["ts", "ts", "ts", None])},
                                 optional={"quality_path": st.just("q"),
                                           "signal_path": st.just("sig"),
                                           "asset_path": st.just("asset")})


@settings(max_examples=300, deadline=None)
@given(st.lists(_reading, min_size=1, max_size=40), _options,
       st.sampled_from([("a", "s"), (None, "s"), ("a", None)]),
       st.sampled_from([TimestampPolicy.DEVICE, TimestampPolicy.GATEWAY]))
def test_an_array_decodes_as_its_readings_one_by_one(
        items: list[Any], options: dict[str, Any], names: tuple[str | None, str | None],
        policy: TimestampPolicy) -> None:
    opts = PayloadOptions(**options)
    batched_clock, plain_clock = SourceClock("b", policy), SourceClock("p", policy)
    payload = json.dumps(items).encode()  # NaN/Infinity literals take the lenient path
    got = PayloadDecoder(opts, batched_clock).decode(payload, *names, NOW)
    want = _one_by_one(json.loads(payload), opts, plain_clock, *names, NOW)
    assert ([tuple(s) for s in got.samples], [r.reason.value for r in got.rejections]) == (
        [tuple(s) for s in want[0]], want[1])
    assert all(type(s) is Sample for s in got.samples)
    assert batched_clock.counted == plain_clock.counted
    assert batched_clock.skew_seconds == plain_clock.skew_seconds


# runs of readings: in step (the bulk case), beyond the limit either way, or without a time
_device_times = st.lists(
    st.lists(st.floats(-29, 29), min_size=1, max_size=80)
    | st.lists(st.floats(-29, 29) | st.floats(-45, -31) | st.floats(31, 45), min_size=1,
               max_size=80)
    | st.lists(st.floats(-60, 60) | st.floats(-20_000, -5_000) | st.floats(40, 500),
               min_size=1, max_size=40)
    | st.lists(st.none() | st.floats(-10, 10), min_size=1, max_size=5),
    max_size=8).map(lambda runs: [skew for run in runs for skew in run])


def _clock_after(times: list[float | None], policy: TimestampPolicy) -> SourceClock:
    clock = SourceClock("plain", policy)
    for t in times:
        clock.stamp(t, NOW)
    return clock


@settings(max_examples=300, deadline=None)
@given(_device_times, st.lists(st.integers(1, 70), min_size=1, max_size=10),
       st.sampled_from([TimestampPolicy.DEVICE, TimestampPolicy.GATEWAY]))
def test_stamp_all_is_stamp_per_reading(skews: list[float | None], cuts: list[int],
                                        policy: TimestampPolicy) -> None:
    """However the readings are cut into messages, the clock stamps and judges the same."""
    one, many = SourceClock("one", policy), SourceClock("many", policy)
    times = [None if s is None else NOW + s for s in skews]
    want = [one.stamp(t, NOW)[0] for t in times]
    got: list[float] = []
    start, k = 0, 0
    while start < len(times):
        end = start + cuts[k % len(cuts)]
        got += many.stamp_all(times[start:end], NOW)
        assert many.skew_seconds == _clock_after(times[:end], policy).skew_seconds
        start, k = end, k + 1
    assert got == want
    assert many.counted == one.counted
    assert (many.skew_seconds, many.note) == (one.skew_seconds, one.note)
    # and the verdict carries on the same into the next message
    assert many.stamp_all([NOW + 1.0], NOW) == [one.stamp(NOW + 1.0, NOW)[0]]


def test_a_rejected_reading_still_counts_for_the_clock() -> None:
    """The clock sees a reading's device time before its value is checked (as one by one)."""
    clock = SourceClock("plc")
    items = [{"value": "abc", "ts": NOW - 5000 + i} for i in range(10)]
    got = PayloadDecoder(PayloadOptions(timestamp_path="ts"), clock).decode(
        json.dumps(items).encode(), "a", "s", NOW)
    assert (got.samples, [r.reason for r in got.rejections]) == ([], [Reason.NOT_A_NUMBER] * 10)
    assert clock.counted == {"clock_skew": 10}
    assert clock.skew_seconds is not None and clock.skew_seconds < -4000


def test_a_batch_keeps_order_quality_and_device_time() -> None:
    clock = SourceClock("plc", TimestampPolicy.DEVICE)
    items: list[Any] = [{"value": 1.5, "ts": NOW - 1, "q": "GOOD"}, 2,
                        {"value": 3, "ts": (NOW - 0.5) * 1000, "q": "uncertain"},
                        {"value": 4.0, "q": "bad"}, {"value": None, "ts": NOW}]
    got = PayloadDecoder(PayloadOptions(timestamp_path="ts", quality_path="q"), clock).decode(
        json.dumps(items).encode(), "pump-1", "vibration", NOW)
    g, u, b = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
    assert got.samples == [
        Sample("pump-1", "vibration", 1.5, g, NOW - 1, NOW - 1),
        Sample("pump-1", "vibration", 2.0, g, NOW, None),
        Sample("pump-1", "vibration", 3.0, u, NOW - 0.5, NOW - 0.5),
        Sample("pump-1", "vibration", None, b, NOW, None),
        Sample("pump-1", "vibration", None, b, NOW, NOW),
    ]
    assert got.rejections == []
    assert type(got.samples[1].value) is float  # an integer reading becomes a float


_EDGE_VALUES: list[Any] = [2.5, -0.0, 7, 10**19, True, None, "3.5", "NaN", "abc", "TRUE",
                           "1e999", [1], {}]
_EDGE_TIMES: list[Any] = [NOW - 1.5, NOW - 15_000.0, NOW + 300.0, NOW * 1000, int(NOW) * 1000,
                          int(NOW * 1e6), int(NOW * 1e9), 9.9e9, 5e10, 5e11, 2 * 10**14, 0.0,
                          -5, None, True, "", "2025-06-15T15:06:40Z", "2025-06-15T17:06:40",
                          "1750000000.5", "soon"]
_EDGE_QUALITIES: list[Any] = ["good", "GOOD", "OK", "Ok", "BAD", " bad ", "uncertain", "meh", 0,
                              1, 2, 3, False, True, None]


def test_every_edge_case_at_once_decodes_as_one_by_one() -> None:
    """Each value, time and quality form, in one array (and so across clock windows)."""
    items: list[Any] = [{"value": v, "ts": t, "q": _EDGE_QUALITIES[(i + j) % 15]}
                        for i, v in enumerate(_EDGE_VALUES) for j, t in enumerate(_EDGE_TIMES)]
    items += [{"ts": NOW}, {"value": 1.0, "sig": 7}, {"value": 1.0, "sig": []}, 4.5, "x", None]
    for options in ({"timestamp_path": "ts", "quality_path": "q"},
                    {"timestamp_path": "ts", "timestamp_unit": "ms", "signal_path": "sig"},
                    {"timestamp_path": "ts", "timestamp_unit": "s"}, {}):
        opts = PayloadOptions(**options)
        batched_clock, plain_clock = SourceClock("b"), SourceClock("p")
        got = PayloadDecoder(opts, batched_clock).decode(json.dumps(items).encode(), "a", "s",
                                                         NOW)
        want = _one_by_one(json.loads(json.dumps(items)), opts, plain_clock, "a", "s", NOW)
        assert [tuple(s) for s in got.samples] == [tuple(s) for s in want[0]], options
        assert [r.reason.value for r in got.rejections] == want[1], options
        assert batched_clock.counted == plain_clock.counted
        assert len(got.samples) > 50 and len(got.rejections) > 50  # both kinds were exercised


_plain_object = st.fixed_dictionaries({
    "value": st.floats(allow_nan=False, allow_infinity=False),
    "ts": st.floats(NOW - 120, NOW + 120) | st.floats(NOW - 20_000, NOW - 10_000)})


@settings(max_examples=200, deadline=None)
@example([{"value": 1.0, "ts": NOW}], (1, {"value": math.nan, "ts": NOW}), {})
@example([{"value": 1.0, "ts": NOW}], (0, {"value": -math.inf, "ts": NOW}), {})
@example([{"value": 1.0, "ts": NOW}], (1, {"value": 2.0, "ts": 5e10}), {"timestamp_path": "ts"})
@example([{"value": 1.0, "ts": NOW}], (1, {"value": 2.0, "ts": math.nan}),
         {"timestamp_path": "ts"})
@given(st.lists(_plain_object, min_size=1, max_size=80),
       st.none() | st.tuples(st.integers(0, 80), _reading),
       st.sampled_from([{"timestamp_path": "ts"}, {"timestamp_path": "ts", "timestamp_unit": "s"},
                        {"timestamp_path": "ts", "timestamp_unit": "ms"}, {}]))
def test_plain_batches_decode_in_bulk_as_one_by_one(
        items: list[Any], odd: tuple[int, Any] | None, options: dict[str, Any]) -> None:
    """The bulk pass for the common shape (float values and times), and its fallback when a
    single reading is odd, both agree with the oracle."""
    if odd is not None:
        items.insert(odd[0], odd[1])
    opts = PayloadOptions(**options)
    batched_clock, plain_clock = SourceClock("b"), SourceClock("p")
    payload = json.dumps(items).encode()
    got = PayloadDecoder(opts, batched_clock).decode(payload, "a", "s", NOW)
    want = _one_by_one(json.loads(payload), opts, plain_clock, "a", "s", NOW)
    assert [tuple(s) for s in got.samples] == [tuple(s) for s in want[0]]
    assert [r.reason.value for r in got.rejections] == want[1]
    assert batched_clock.counted == plain_clock.counted
    assert batched_clock.skew_seconds == plain_clock.skew_seconds


def test_the_common_shape_takes_the_bulk_pass(monkeypatch: Any) -> None:
    def one_at_a_time(*_: Any) -> None:
        raise AssertionError("decoded one reading at a time")

    decoder = PayloadDecoder(PayloadOptions(timestamp_path="ts"), SourceClock("plc"))
    plain = [{"value": 1.5 + k, "ts": NOW - 2 + k / 100} for k in range(100)]
    monkeypatch.setattr(decoder, "_readings", one_at_a_time)
    got = decoder.decode(json.dumps(plain).encode(), "a", "s", NOW)
    assert [s.value for s in got.samples] == [1.5 + k for k in range(100)]
    with pytest.raises(AssertionError, match="one reading at a time"):  # an int value: not
        decoder.decode(json.dumps([*plain, {"value": 1, "ts": NOW}]).encode(), "a", "s", NOW)


def test_a_long_in_step_batch_leaves_the_ring_as_one_by_one() -> None:
    """After one odd reading, in-step batches of every length (so at every alignment with the
    ring of 32) leave the same recent skews: the odd one goes exactly when it should."""
    history = [NOW + 0.5 * k for k in range(8)] + [NOW + 40.0]  # one reading 40 s ahead
    for n in range(1, 100):
        one, many = SourceClock("one"), SourceClock("many")
        for t in history:
            one.stamp(t, NOW)
            many.stamp(t, NOW)
        batch = [NOW - 20 + (k * 7919 % 97) * 0.4 for k in range(n)]  # within 30 s, mixed
        assert many.stamp_all(list(batch), NOW) == [one.stamp(t, NOW)[0] for t in batch]
        assert many.skew_seconds == one.skew_seconds, n
        assert many.counted == one.counted


@settings(max_examples=300, deadline=None)
@example({"value": 1.0, "ts": NOW}, {"timestamp_path": "ts"}, TimestampPolicy.DEVICE)
@example({"value": 1.0, "ts": NOW + 40}, {"timestamp_path": "ts"}, TimestampPolicy.DEVICE)
@example({"value": math.inf, "ts": NOW}, {"timestamp_path": "ts"}, TimestampPolicy.DEVICE)
@example({"value": 1.0, "ts": math.nan}, {"timestamp_path": "ts"}, TimestampPolicy.DEVICE)
@example({"value": 1.0, "ts": NOW * 1000}, {"timestamp_path": "ts"}, TimestampPolicy.GATEWAY)
@given(_plain_object | _reading,
       st.sampled_from([{"timestamp_path": "ts"}, {"timestamp_path": "ts", "timestamp_unit": "s"},
                        {"timestamp_path": "ts", "timestamp_unit": "ms"}, {}]),
       st.sampled_from([TimestampPolicy.DEVICE, TimestampPolicy.GATEWAY]))
def test_one_reading_per_message_decodes_as_one_by_one(
        item: Any, options: dict[str, Any], policy: TimestampPolicy) -> None:
    """A message that is one object (not an array): the shortcut for the plain shape and its
    fallback agree with the oracle, the clock's verdicts and counts included."""
    opts = PayloadOptions(**options)
    fast_clock, plain_clock = SourceClock("f", policy), SourceClock("p", policy)
    for warm in (NOW - 1, NOW - 0.5):  # a clock with some history, as in a running source
        fast_clock.stamp(warm, NOW)
        plain_clock.stamp(warm, NOW)
    payload = json.dumps(item).encode()
    got = PayloadDecoder(opts, fast_clock).decode(payload, "a", "s", NOW)
    want = _one_by_one([json.loads(payload)], opts, plain_clock, "a", "s", NOW)
    assert [tuple(s) for s in got.samples] == [tuple(s) for s in want[0]]
    assert all(type(s) is Sample for s in got.samples)
    assert [r.reason.value for r in got.rejections] == want[1]
    assert fast_clock.counted == plain_clock.counted
    assert fast_clock.skew_seconds == plain_clock.skew_seconds


def test_one_plain_reading_takes_the_shortcut(monkeypatch: Any) -> None:
    def one_at_a_time(*_: Any) -> None:
        raise AssertionError("decoded by the general pass")

    decoder = PayloadDecoder(PayloadOptions(timestamp_path="ts"), SourceClock("plc"))
    monkeypatch.setattr(decoder, "_readings", one_at_a_time)
    got = decoder.decode(b'{"value": 7.25, "ts": %r}' % (NOW - 1), "a", "s", NOW)
    assert [tuple(s) for s in got.samples] == [("a", "s", 7.25, Quality.GOOD, NOW - 1, NOW - 1)]
    for odd in (b'{"value": 7, "ts": 1}', b'{"value": "7.5"}', b'{"ts": 1.5}'):
        with pytest.raises(AssertionError, match="general pass"):
            decoder.decode(odd, "a", "s", NOW)
