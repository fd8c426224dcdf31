"""One time base: the gateway clock, time settings, and a source's clock check in words."""

from __future__ import annotations

import time
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.mqtt.config import MqttSourceConfig
from gateway.model import Quality, Sample, SourceHealth, SourceState
from gateway.record import open_output
from gateway.timebase import (
    DuplicatePolicy,
    SourceClock,
    TimeSettings,
    TimestampPolicy,
    ZonedTimeSettings,
    gateway_now,
    skew_words,
)
from rules.recording import load_recording

NOW = 1_780_000_000.0
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_gateway_clock_is_wall_time_at_start_and_ignores_later_wall_clock_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert abs(gateway_now() - time.time()) < 5  # on the wall clock's scale
    before = gateway_now()
    # An NTP step or `date -s` moves time.time(); the gateway clock does not follow it.
    monkeypatch.setattr(time, "time", lambda: 0.0)
    after = gateway_now()
    assert before <= after < before + 5
    readings = [gateway_now() for _ in range(1000)]
    assert readings == sorted(readings)


@pytest.mark.parametrize(("seconds", "words"), [
    (-5 * 3600, "5 h 0 min behind"),
    (-5 * 3600 - 61, "5 h 1 min behind"),
    (123, "2 min 3 s ahead"),
    (45.4, "45 s ahead"),
    (-0.3, "in step"),
    (2 * 86400 + 3 * 3600 + 59, "2 d 3 h ahead"),
])
def test_skew_in_words(seconds: float, words: str) -> None:
    assert skew_words(seconds) == words


def test_gateway_policy_always_gives_rules_the_receive_time() -> None:
    clock = SourceClock("plc", TimestampPolicy.GATEWAY)
    assert clock.stamp(NOW - 2, NOW) == (NOW, NOW - 2)
    assert clock.stamp(None, NOW) == (NOW, None)
    assert clock.counted == {}
    assert clock.skew_seconds == -2
    assert clock.note == ""


def test_device_policy_uses_device_time_only_within_the_skew_limit() -> None:
    clock = SourceClock("plc", TimestampPolicy.DEVICE, max_skew_seconds=30)
    assert clock.stamp(NOW - 29, NOW) == (NOW - 29, NOW - 29)
    assert clock.stamp(NOW + 29, NOW) == (NOW + 29, NOW + 29)
    # A time further ahead than the limit would run timers wrong: receive time, counted.
    assert clock.stamp(NOW + 31, NOW) == (NOW, NOW + 31)
    assert clock.counted == {"clock_skew": 1}
    # A clock 120 s behind: rules see the receive time (a spike cannot beat an on-delay).
    behind = SourceClock("plc", TimestampPolicy.DEVICE, max_skew_seconds=30)
    for i in range(10):
        received = NOW + i
        assert behind.stamp(received - 120, received) == (received, received - 120)
    assert behind.counted == {"clock_skew": 10}


def test_late_deliveries_of_an_in_step_clock_keep_their_device_time() -> None:
    clock = SourceClock("plc", TimestampPolicy.DEVICE, max_skew_seconds=30)
    for i in range(20):
        clock.stamp(NOW + i - 0.05, NOW + i)  # live, 50 ms in flight
    # A straggler measured 9 minutes ago: late, not off. It keeps what it measured when.
    assert clock.stamp(NOW - 520, NOW + 20) == (NOW - 520, NOW - 520)
    # A broker backlog after a restart: 40 readings of the last 40 s arrive within 40 ms.
    stamped = [clock.stamp(NOW + i, NOW + 60 + i / 1000) for i in range(20, 60)]
    assert all(source_ts == device_ts for source_ts, device_ts in stamped)
    assert clock.counted == {}
    assert clock.note == ""


def test_skew_report_is_robust_against_one_odd_sample() -> None:
    clock = SourceClock("plc", TimestampPolicy.DEVICE, max_skew_seconds=30)
    for i in range(20):
        clock.stamp(NOW + i - 1, NOW + i)
    assert clock.stamp(NOW - 9999, NOW + 20) == (NOW - 9999, NOW - 9999)  # a garbled time
    assert clock.stamp(NOW + 9999, NOW + 21) == (NOW + 21, NOW + 9999)  # ahead: never trusted
    assert clock.skew_seconds == -1
    assert clock.note == ""
    assert clock.counted == {"clock_skew": 1}
    # ... and the estimate follows a clock that really changed.
    for i in range(40):
        clock.stamp(NOW - 3600 + i, NOW + i)
    assert clock.skew_seconds == -3600
    assert "1 h 0 min behind" in clock.note
    assert clock.stamp(NOW, NOW + 41) == (NOW + 41, NOW)


def test_a_clock_five_hours_behind_is_named_in_words() -> None:
    clock = SourceClock("line3-plc", TimestampPolicy.DEVICE)
    for i in range(40):
        received = NOW + 10 * i
        assert clock.stamp(received - 5 * 3600 + 0.2, received) == (received,
                                                                    received - 5 * 3600 + 0.2)
    assert clock.skew_seconds == pytest.approx(-5 * 3600 + 0.2)
    assert clock.note.startswith("clock is 5 h 0 min behind")
    assert clock.counted == {"clock_skew": 40}
    ahead = SourceClock("x")
    ahead.stamp(NOW + 123, NOW)
    assert ahead.note.startswith("clock is 2 min 3 s ahead")


def test_zone_less_time_without_a_timezone_is_not_trusted_and_named() -> None:
    clock = SourceClock("line3-plc", TimestampPolicy.DEVICE)
    naive = datetime(2026, 12, 4, 8, 0, 0)
    assert clock.localize(naive, NOW) is None  # no silent UTC
    assert clock.counted == {"timestamp_without_zone": 1}
    assert 'set timezone = "<IANA name>" for source line3-plc' in clock.note


def test_zone_less_time_is_read_in_the_configured_zone() -> None:
    clock = SourceClock("plc", zone=BERLIN)
    winter = datetime(2026, 12, 4, 8, 0, 0)
    summer = datetime(2026, 7, 4, 8, 0, 0)
    assert clock.localize(winter, NOW) == datetime(2026, 12, 4, 7, 0, tzinfo=UTC).timestamp()
    assert clock.localize(summer, NOW) == datetime(2026, 7, 4, 6, 0, tzinfo=UTC).timestamp()
    assert clock.counted == {}


def test_local_times_that_happen_twice_or_never_are_read_deterministically() -> None:
    clock = SourceClock("plc", zone=BERLIN)
    # 2026-10-25 02:30 happens twice in Berlin: 00:30 UTC (summer time) and 01:30 UTC.
    twice = datetime(2026, 10, 25, 2, 30)
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).timestamp()
    assert clock.localize(twice, first + 5) == first  # the reading nearest the receive time
    assert clock.localize(twice, second + 5) == second
    assert clock.localize(twice, first + 5) == first  # same inputs, same answer
    assert clock.localize(twice, (first + second) / 2) == first  # a tie: the earlier one
    # 2026-03-29 02:30 never happens in Berlin (01:00 UTC jumps from 02:00 to 03:00 local).
    never = datetime(2026, 3, 29, 2, 30)
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
    # Read with the offset nearest the receive time: here winter time, 01:30 UTC.
    got = {clock.localize(never, jump + 60) for _ in range(3)}
    assert got == {datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()}


def test_settings_are_strict_with_units_and_plain_words() -> None:
    settings = ZonedTimeSettings()
    assert (settings.timestamps, settings.timezone, settings.max_clock_skew_seconds,
            settings.duplicates) == (TimestampPolicy.GATEWAY, None, 30.0,
                                     DuplicatePolicy.SKIP_NOT_NEWER)
    with pytest.raises(ValidationError, match="'Mars/Olympus' is not a known IANA time zone"):
        ZonedTimeSettings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="not a known IANA time zone"):
        ZonedTimeSettings(timezone="../etc/passwd")
    with pytest.raises(ValidationError):
        ZonedTimeSettings(timestamps="plc")
    with pytest.raises(ValidationError):
        ZonedTimeSettings(max_clock_skew_seconds=0)
    with pytest.raises(ValidationError):
        TimeSettings(timezone="UTC")  # type: ignore[call-arg]  # OPC UA times are UTC by spec
    clock = ZonedTimeSettings(timestamps=TimestampPolicy.DEVICE, timezone="Europe/Berlin",
                              max_clock_skew_seconds=5).clock("plc")
    assert (clock.source, clock.zone, clock.max_skew_seconds) == ("plc", BERLIN, 5)
    assert clock.stamp(NOW - 1, NOW) == (NOW - 1, NOW - 1)


def test_mqtt_source_config_carries_the_time_settings() -> None:
    raw = {"name": "line3", "timestamps": "device", "timezone": "America/Chicago",
           "max_clock_skew_seconds": 10, "duplicates": "evaluate_all",
           "subscriptions": [{"pattern": "plant/+asset/+signal", "timestamp_path": "ts"}]}
    cfg = MqttSourceConfig.model_validate(raw)
    assert (cfg.timestamps, cfg.timezone, cfg.duplicates) == (
        TimestampPolicy.DEVICE, "America/Chicago", DuplicatePolicy.EVALUATE_ALL)
    with pytest.raises(ValidationError, match="'Chicago' is not a known IANA time zone"):
        MqttSourceConfig.model_validate({**raw, "timezone": "Chicago"})


def test_health_carries_skew_note_and_counts() -> None:
    clock = SourceClock("line3-plc")
    clock.stamp(NOW - 5 * 3600, NOW)
    clock.localize(datetime(2026, 1, 1), NOW)
    health = clock.annotate(SourceHealth(SourceState.CONNECTED, "connected to broker:1883",
                                         samples_total=2))
    assert health.clock_skew_seconds == -5 * 3600
    assert health.counted == {"clock_skew": 1, "timestamp_without_zone": 1}
    assert health.clock_note.startswith("clock is 5 h 0 min behind")
    assert "set timezone" in health.clock_note
    assert health.detail == f"connected to broker:1883; {health.clock_note}"
    quiet = SourceClock("ok").annotate(SourceHealth(SourceState.CONNECTED, "connected"))
    assert (quiet.detail, quiet.clock_note, quiet.clock_skew_seconds, quiet.counted) == (
        "connected", "", None, {})


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_recordings_carry_both_times(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    samples = [Sample("pump-1", "vibration", 7.25, Quality.GOOD, NOW, NOW - 5 * 3600 + 0.125),
               Sample("pump-1", "vibration", None, Quality.BAD, NOW + 1, None)]
    out = open_output(path)
    for s in samples:
        out.write(s)
    out.close()
    assert list(load_recording(path)) == samples


def test_recordings_without_device_times_still_read(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_text("asset,signal,value,quality,ts\npump-1,vibration,3.5,GOOD,1700000000.5\n")
    assert list(load_recording(old)) == [
        Sample("pump-1", "vibration", 3.5, Quality.GOOD, 1_700_000_000.5, None)]
