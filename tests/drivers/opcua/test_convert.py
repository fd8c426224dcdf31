"""Status codes to quality, timestamps, values: the per-notification conversion."""

from __future__ import annotations

import datetime as dt

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from drivers.opcua.convert import Binding, NotNumeric, quality_of, status_name, to_sample
from gateway.model import Quality
from gateway.timebase import SourceClock, TimestampPolicy

B = Binding("pump-1", "vibration", ua.NodeId(ua.String("x"), ua.Int16(2)), 1)
T = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def code(c: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(c))


def test_quality_from_severity_bits() -> None:
    assert quality_of(StatusCodes.Good) is Quality.GOOD
    assert quality_of(StatusCodes.GoodClamped) is Quality.GOOD
    assert quality_of(StatusCodes.UncertainLastUsableValue) is Quality.UNCERTAIN
    assert quality_of(StatusCodes.BadSensorFailure) is Quality.BAD
    assert quality_of(0xC0000000) is Quality.BAD
    assert status_name(StatusCodes.BadSensorFailure) == "BadSensorFailure"
    assert status_name(0x80AB0401) == "BadInvalidArgument"  # info bits ignored
    assert status_name(0x80FF0000) == "0x80FF0000"


def test_bad_status_drops_the_value() -> None:
    dv = ua.DataValue(ua.Variant(7.5), StatusCode=code(StatusCodes.BadSensorFailure),
                      SourceTimestamp=T)  # type: ignore[arg-type]
    s = to_sample(B, dv, received=1.0)
    assert (s.value, s.quality, s.device_ts) == (None, Quality.BAD, T.timestamp())


def test_uncertain_keeps_the_value() -> None:
    dv = ua.DataValue(ua.Variant(7), StatusCode=code(StatusCodes.UncertainSensorNotAccurate))
    s = to_sample(B, dv, received=1.0)
    assert (s.value, s.quality) == (7.0, Quality.UNCERTAIN)


def test_timestamp_fallbacks() -> None:
    naive = T.replace(tzinfo=None)  # OPC UA time is UTC even when a datetime forgets it
    dv = ua.DataValue(ua.Variant(True), ServerTimestamp=naive)  # type: ignore[arg-type]
    s = to_sample(B, dv, received=1.0)
    assert (s.value, s.source_ts, s.device_ts) == (1.0, 1.0, T.timestamp())
    s = to_sample(B, ua.DataValue(ua.Variant(1.5)), received=42.0)
    assert (s.source_ts, s.device_ts) == (42.0, None)


def test_source_timestamp_wins_and_the_clock_decides_what_rules_see() -> None:
    server = T + dt.timedelta(seconds=3)
    dv = ua.DataValue(ua.Variant(2.0), SourceTimestamp=T,  # type: ignore[arg-type]
                      ServerTimestamp=server)  # type: ignore[arg-type]
    trusting = SourceClock("plc", TimestampPolicy.DEVICE, max_skew_seconds=30)
    near = to_sample(B, dv, received=T.timestamp() + 5, clock=trusting)
    assert (near.source_ts, near.device_ts) == (T.timestamp(), T.timestamp())
    # Five hours off: the device time stays as evidence, rules see the receive time.
    far = to_sample(B, dv, received=T.timestamp() + 5 * 3600, clock=trusting)
    assert (far.source_ts, far.device_ts) == (T.timestamp() + 5 * 3600, T.timestamp())
    assert trusting.counted == {"clock_skew": 1}


def test_non_numeric_value_is_refused() -> None:
    with pytest.raises(NotNumeric):
        to_sample(B, ua.DataValue(ua.Variant("hello")), received=1.0)


def test_the_fast_path_builds_the_same_sample_as_the_constructor() -> None:
    """Floats skip the isinstance chain and Samples skip the frozen __init__: same result."""
    from gateway.model import Sample

    dv = ua.DataValue(ua.Variant(7.25), SourceTimestamp=T)  # type: ignore[arg-type]
    s = to_sample(B, dv, received=1.0)
    assert type(s) is Sample
    assert s == Sample("pump-1", "vibration", 7.25, Quality.GOOD, 1.0, T.timestamp())
    n = to_sample(B, ua.DataValue(ua.Variant(3, ua.VariantType.Int64)), received=1.0)
    assert (type(n.value), n.value) == (float, 3.0)
