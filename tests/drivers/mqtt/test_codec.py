"""Payload decoding, table driven: what each payload becomes, and why a rejection is rejected."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.mqtt.codec import PayloadDecoder, Reason, to_timestamp
from drivers.mqtt.config import PayloadOptions, TimestampUnit
from gateway.model import Quality, Sample

NOW = 1_750_000_000.0
G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def decode(payload: bytes, asset: str | None = "a", signal: str | None = "s",
           **options: Any) -> tuple[list[tuple[Any, ...]], list[str]]:
    """(asset, signal, value, quality, device_ts) of each sample, and the rejection reasons.
    Rules see the receive time: the default source clock trusts no device time."""
    decoded = PayloadDecoder(PayloadOptions(**options)).decode(payload, asset, signal, NOW)
    assert all(s.source_ts == NOW for s in decoded.samples)
    samples = [(s.asset, s.signal, s.value, s.quality, s.device_ts) for s in decoded.samples]
    return samples, [r.reason.value for r in decoded.rejections]


CASES: list[tuple[str, bytes, dict[str, Any], list[tuple[Any, ...]], list[str]]] = [
    # id, payload, options, samples, rejections
    ("plain", b"7.3", {"format": "value"}, [("a", "s", 7.3, G, None)], []),
    ("plain-spaces", b" -12e-1\r\n", {"format": "value"}, [("a", "s", -1.2, G, None)], []),
    ("plain-bool", b"TRUE", {"format": "value"}, [("a", "s", 1.0, G, None)], []),
    ("plain-nan", b"nan", {"format": "value"}, [], ["nan"]),
    ("plain-inf", b"Infinity", {"format": "value"}, [], ["infinite"]),
    ("plain-huge", b"1e999", {"format": "value"}, [], ["infinite"]),
    ("plain-text", b"abc", {"format": "value"}, [], ["not_a_number"]),
    ("plain-empty", b"", {"format": "value"}, [], ["empty"]),
    ("plain-blank", b"  \n", {"format": "value"}, [], ["empty"]),
    ("plain-binary", b"\xff\xfe", {"format": "value"}, [], ["not_utf8"]),
    ("json-number", b"7.5", {}, [("a", "s", 7.5, G, None)], []),
    ("json-null", b"null", {}, [("a", "s", None, B, None)], []),
    ("json-object", b'{"value": 3}', {}, [("a", "s", 3.0, G, None)], []),
    ("json-numeric-string", b'{"value": "3.5"}', {}, [("a", "s", 3.5, G, None)], []),
    ("json-string", b'{"value": "abc"}', {}, [], ["not_a_number"]),
    ("json-nan-string", b'{"value": "NaN"}', {}, [], ["nan"]),
    ("json-nan-literal", b'{"value": NaN}', {}, [], ["nan"]),
    ("json-nan-literal-in-array", b'[1, NaN]', {}, [("a", "s", 1.0, G, None)], ["nan"]),
    ("json-infinity-literal", b'{"value": Infinity}', {}, [], ["infinite"]),
    ("json-minus-infinity-literal", b'{"v": 1, "value": -Infinity}', {}, [], ["infinite"]),
    ("json-huge-number", b'{"value": 1e999}', {}, [], ["infinite"]),
    ("json-not-utf8", b'{"value": 1, "unit": "\xb0C"}', {}, [], ["not_utf8"]),
    ("json-not-utf8-before-nan", b'{"u": "\xff", "value": NaN}', {}, [], ["not_utf8"]),
    ("json-nan-after-text", '{"u": "\u00b0C", "value": NaN}'.encode(), {}, [], ["nan"]),
    ("json-not-a-literal", b'{"value": Nope}', {}, [], ["malformed_json"]),
    ("json-nan-then-broken", b'{"value": NaN, "x": }', {}, [], ["malformed_json"]),
    ("fields-nan-literal", b'{"vibration": NaN, "current": 12}', {"format": "json_fields"},
     [("a", "current", 12.0, G, None)], ["nan"]),
    ("json-object-value", b'{"value": {"x": 1}}', {}, [], ["not_a_number"]),
    ("json-truncated", b'{"value": 1', {}, [], ["malformed_json"]),
    ("json-empty-array", b"[]", {}, [], ["empty"]),
    ("json-missing-value", b'{"v": 1}', {}, [], ["no_value"]),
    ("json-nested", b'{"data": {"value": 2, "ts": 1700000000123, "q": "uncertain"}}',
     {"value_path": "data.value", "timestamp_path": "data.ts", "quality_path": "data.q"},
     [("a", "s", 2.0, U, 1_700_000_000.123)], []),
    ("json-list-index", b'{"values": [5, 6]}', {"value_path": "values.1"},
     [("a", "s", 6.0, G, None)], []),
    ("json-bad-quality-drops-value", b'{"value": 4, "quality": "BAD"}', {"quality_path": "quality"},
     [("a", "s", None, B, None)], []),
    ("json-quality-false", b'{"value": 4, "ok": false}', {"quality_path": "ok"},
     [("a", "s", None, B, None)], []),
    ("json-unknown-quality", b'{"value": 4, "q": "meh"}', {"quality_path": "q"},
     [("a", "s", 4.0, U, None)], []),
    ("json-missing-ts", b'{"value": 4}', {"timestamp_path": "ts"}, [("a", "s", 4.0, G, None)], []),
    ("json-iso-ts", b'{"value": 4, "ts": "2023-11-14T22:13:20+01:00"}', {"timestamp_path": "ts"},
     [("a", "s", 4.0, G, 1_699_996_400.0)], []),
    # No silent UTC: without a configured time zone a zone-less time is no device time.
    ("json-naive-iso-not-trusted", b'{"value": 4, "ts": "2023-11-14T22:13:20"}',
     {"timestamp_path": "ts"}, [("a", "s", 4.0, G, None)], []),
    ("json-naive-iso-out-of-range", b'{"value": 4, "ts": "1900-01-01T00:00:00"}',
     {"timestamp_path": "ts"}, [], ["bad_timestamp"]),
    ("json-bad-ts", b'{"value": 4, "ts": "soon"}', {"timestamp_path": "ts"}, [],
     ["bad_timestamp"]),
    ("json-negative-ts", b'{"value": 4, "ts": -5}', {"timestamp_path": "ts"}, [],
     ["bad_timestamp"]),
    ("json-array-one-bad",
     b'[{"value": 1}, {"value": "x"}, 3, {"nothing": 0}, {"value": 5}]', {},
     [("a", "s", 1.0, G, None), ("a", "s", 3.0, G, None), ("a", "s", 5.0, G, None)],
     ["not_a_number", "no_value"]),
    ("json-signal-path",
     b'[{"sig": "vibration", "value": 1}, {"sig": "temperature", "value": 60}, {"value": 2}]',
     {"signal_path": "sig"},
     [("a", "vibration", 1.0, G, None), ("a", "temperature", 60.0, G, None),
      ("a", "s", 2.0, G, None)], []),  # no signal in the element: the topic's
    ("json-asset-path-wins", b'{"asset": "pump-9", "value": 1}', {"asset_path": "asset"},
     [("pump-9", "s", 1.0, G, None)], []),
    ("fields", b'{"vibration": 7.1, "temperature": 60, "ts": 1700000000, "running": true}',
     {"format": "json_fields", "timestamp_path": "ts"},
     [("a", "vibration", 7.1, G, 1.7e9), ("a", "temperature", 60.0, G, 1.7e9),
      ("a", "running", 1.0, G, 1.7e9)], []),
    ("fields-bad-one", b'{"vibration": 7.1, "status": "ok", "temperature": null}',
     {"format": "json_fields"},
     [("a", "vibration", 7.1, G, None), ("a", "temperature", None, B, None)], ["not_a_number"]),
    ("fields-allow-list", b'{"vibration": 7.1, "status": "ok", "serial": "X1"}',
     {"format": "json_fields", "fields": ["vibration", "current"]},
     [("a", "vibration", 7.1, G, None)], []),
    ("fields-nested", b'{"ts": 1700000000, "data": {"current": 12}}',
     {"format": "json_fields", "fields_path": "data", "timestamp_path": "ts"},
     [("a", "current", 12.0, G, 1.7e9)], []),
    ("fields-not-object", b"7", {"format": "json_fields"}, [], ["not_an_object"]),
    ("fields-none", b'{"ts": 1700000000}', {"format": "json_fields", "timestamp_path": "ts"},
     [], ["empty"]),
]


@pytest.mark.parametrize(("payload", "options", "samples", "rejections"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decode(payload: bytes, options: dict[str, Any], samples: list[tuple[Any, ...]],
                rejections: list[str]) -> None:
    assert decode(payload, **options) == (samples, rejections)


def test_missing_asset_or_signal_is_rejected() -> None:
    assert decode(b"1", asset=None) == ([], ["no_asset"])
    assert decode(b"1", signal=None) == ([], ["no_signal"])
    assert decode(b'[{"value": 1}, {"sig": "t", "value": 2}]', signal=None,
                  signal_path="sig") == ([("a", "t", 2.0, G, None)], ["no_signal"])
    assert decode(b'{"sig": 7, "value": 2}', signal_path="sig")[0][0][1] == "7"
    assert decode(b'{"sig": [], "value": 2}', signal_path="sig") == ([], ["no_signal"])


@pytest.mark.parametrize(("raw", "unit", "seconds"), [
    (1_700_000_000, TimestampUnit.AUTO, 1_700_000_000.0),
    (1_700_000_000_000, TimestampUnit.AUTO, 1_700_000_000.0),
    (1_700_000_000_000_000, TimestampUnit.AUTO, 1_700_000_000.0),
    (1_700_000_000_000_000_000, TimestampUnit.AUTO, 1_700_000_000.0),
    ("1700000000.5", TimestampUnit.AUTO, 1_700_000_000.5),
    (1_700_000_000, TimestampUnit.MILLISECONDS, 1_700_000.0),
    ("2023-11-14T22:13:20Z", TimestampUnit.MILLISECONDS, 1_700_000_000.0),
])
def test_timestamps(raw: object, unit: TimestampUnit, seconds: float) -> None:
    assert to_timestamp(raw, unit) == pytest.approx(seconds)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_and_never_yield_nan(payload: bytes) -> None:
    for options in ({"format": "value"}, {}, {"format": "json_fields"}):
        decoded = PayloadDecoder(PayloadOptions(**options)).decode(payload, "a", "s", NOW)
        for sample in decoded.samples:
            assert isinstance(sample, Sample)
            assert sample.value is None or math.isfinite(sample.value)
        assert all(isinstance(r.reason, Reason) for r in decoded.rejections)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.sampled_from(["value", "ts", "q", "x"]), kids,
                                      max_size=4), max_leaves=12))
def test_arbitrary_json_never_raises(doc: object) -> None:
    import json

    payload = json.dumps(doc).encode()
    options = {"timestamp_path": "ts", "quality_path": "q"}
    for fmt in ("json", "json_fields"):
        decoded = PayloadDecoder(PayloadOptions(format=fmt, **options)).decode(
            payload, "a", "s", NOW)
        assert all(s.value is None or math.isfinite(s.value) for s in decoded.samples)


def test_rejections_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    from drivers.mqtt.rejections import RejectionLog

    caplog.set_level("INFO", logger="drivers.mqtt")
    log = RejectionLog("src", quiet_seconds=60)
    for i in range(100):
        log.add("nan", "plant/p/v", "'nan'", 1000.0 + i)
    log.add("empty", "plant/p/v", "", 1050.0)
    log.expire(1100.0)  # nan quiet for 1 s only: still the same episode
    log.add("nan", "plant/p/v", "", 1130.0)
    log.expire(1200.0)  # both quiet for >= 60 s: episodes end
    log.add("nan", "plant/p/v", "", 1300.0)  # a new episode
    messages = [r.getMessage() for r in caplog.records]
    assert log.counts == {"nan": 102, "empty": 1}
    assert sum("rejecting messages: nan" in m for m in messages) == 2
    assert sum("rejecting messages: empty" in m for m in messages) == 1
    assert sum("no nan rejections" in m and "(101 in" in m for m in messages) == 1
    assert sum("no empty rejections" in m for m in messages) == 1


def test_rejection_counts_have_plain_text_keys() -> None:
    import orjson

    from drivers.mqtt.rejections import RejectionLog

    log = RejectionLog("src", quiet_seconds=60)
    log.add(Reason.NAN, "plant/p/v", "", 1000.0)
    assert [type(k) for k in log.counts] == [str]
    assert orjson.loads(orjson.dumps(log.counts)) == {"nan": 1}  # what /status serves


def test_zone_less_times_are_read_in_the_source_time_zone() -> None:
    import zoneinfo

    from gateway.timebase import SourceClock, TimestampPolicy

    received = 1_764_835_200.0  # 2025-12-04 08:00 UTC
    options = PayloadOptions(timestamp_path="ts")
    chicago = SourceClock("plc", TimestampPolicy.DEVICE, zoneinfo.ZoneInfo("America/Chicago"))
    payload = b'{"value": 1, "ts": "2025-12-04T01:59:58"}'  # 07:59:58 UTC, 2 s ago
    (s,) = PayloadDecoder(options, chicago).decode(payload, "a", "s", received).samples
    assert (s.source_ts, s.device_ts) == (received - 2, received - 2)
    # The same text with no time zone configured is no device time at all (no silent UTC).
    unzoned = SourceClock("plc", TimestampPolicy.DEVICE)
    (s,) = PayloadDecoder(options, unzoned).decode(payload, "a", "s", received).samples
    assert (s.source_ts, s.device_ts) == (received, None)
    assert unzoned.counted == {"timestamp_without_zone": 1}
    # An offset in the text wins over the configured zone.
    zoned = b'{"value": 1, "ts": "2025-12-04T07:59:58+00:00"}'
    (s,) = PayloadDecoder(options, chicago).decode(zoned, "a", "s", received).samples
    assert s.device_ts == received - 2


def test_json_fields_of_one_object_share_one_stamp() -> None:
    from gateway.timebase import SourceClock

    clock = SourceClock("plc")
    options = PayloadOptions(format="json_fields", timestamp_path="ts")
    got = PayloadDecoder(options, clock).decode(b'{"a": 1, "b": 2, "c": 3, "ts": 1.7e9}', "x",
                                               None, NOW)
    assert {(s.source_ts, s.device_ts) for s in got.samples} == {(NOW, 1.7e9)}
    assert clock.counted == {"clock_skew": 1}  # one object, one clock reading
