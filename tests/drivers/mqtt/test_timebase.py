"""One time base through a real Mosquitto: device clocks that are off, zone-less local times."""

from __future__ import annotations

import json
import time
import zoneinfo
from datetime import datetime, timedelta

import pytest

from gateway.model import Sample
from gateway.timebase import gateway_now
from simulators.mqtt_plant import MqttPlantPublisher
from tests.drivers.mqtt.conftest import running_source, source_config
from tests.harness import Mosquitto, wait_for

ZONE = "Europe/Berlin"


def local_text(offset_seconds: float) -> str:
    """The PLC's wall clock as many send it: local time, no zone or offset."""
    shown = datetime.now(zoneinfo.ZoneInfo(ZONE)) + timedelta(seconds=offset_seconds)
    return shown.replace(tzinfo=None).isoformat(timespec="milliseconds")


async def publish(publisher: MqttPlantPublisher, n: int, offset_seconds: float) -> None:
    for i in range(n):
        await publisher.publish_raw("plant/line3-plc/temperature", json.dumps(
            {"value": 20 + i, "ts": local_text(offset_seconds)}))


def received_now(samples: list[Sample], started: float) -> bool:
    return all(started - 1 <= s.source_ts <= gateway_now() + 1 for s in samples)


async def test_a_clock_five_hours_behind_is_named_and_never_drives_rules(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    cfg = source_config(mosquitto.port, timestamps="device", timezone=ZONE,
                        max_clock_skew_seconds=30)
    started = gateway_now()
    async with running_source(cfg) as (source, got):
        await publish(publisher, 10, -5 * 3600)
        await wait_for(lambda: len(got.samples) == 10, 10, "ten samples")
        assert received_now(got.samples, started)  # rules see receive time
        for s in got.samples:  # the device's time is kept as evidence, correctly zoned
            assert s.device_ts is not None
            assert abs(s.device_ts - (s.source_ts - 5 * 3600)) < 5
        health = source.health()
    assert health.clock_note.startswith("clock is 5 h 0 min behind"), health.clock_note
    assert "5 h 0 min behind" in health.detail
    assert health.clock_skew_seconds is not None
    assert abs(health.clock_skew_seconds + 5 * 3600) < 5
    assert health.counted == {"clock_skew": 10}
    assert health.rejected == {}


async def test_zone_less_times_without_a_timezone_are_named_not_guessed(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    cfg = source_config(mosquitto.port, timestamps="device")  # no timezone configured
    started = gateway_now()
    async with running_source(cfg) as (source, got):
        await publish(publisher, 3, 0)
        await wait_for(lambda: len(got.samples) == 3, 10, "three samples")
        assert received_now(got.samples, started)
        assert [s.device_ts for s in got.samples] == [None, None, None]  # no silent UTC
        health = source.health()
    assert health.counted == {"timestamp_without_zone": 3}
    assert 'set timezone = "<IANA name>" for source test-mqtt' in health.detail
    assert health.clock_skew_seconds is None


async def test_device_time_within_the_limit_is_what_rules_see(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    cfg = source_config(mosquitto.port, timestamps="device", max_clock_skew_seconds=30)
    device_ts = time.time() - 2.5  # a clock 2.5 s behind, sent as epoch milliseconds
    async with running_source(cfg) as (source, got):
        await publisher.publish_raw("plant/pump-1/vibration", json.dumps(
            {"value": 7.5, "ts": round(device_ts * 1000)}))
        await wait_for(lambda: len(got.samples) == 1, 10, "one sample")
        (s,) = got.samples
        assert s.source_ts == s.device_ts == round(device_ts * 1000) / 1000
        health = source.health()
    assert (health.counted, health.clock_note) == ({}, "")
    assert health.clock_skew_seconds is not None and -10 < health.clock_skew_seconds < 0


@pytest.mark.parametrize("age_seconds", [20, 60])
async def test_a_broker_backlog_after_a_restart(mosquitto: Mosquitto,
                                                publisher: MqttPlantPublisher,
                                                age_seconds: int) -> None:
    cfg = source_config(mosquitto.port, timestamps="device", max_clock_skew_seconds=30,
                        client_id=f"backlog-{age_seconds}")
    async with running_source(cfg):
        pass  # the persistent session now exists; the gateway is "down" after this
    now = time.time()  # readings taken age_seconds ago wait in the broker meanwhile
    for i in range(3):
        await publisher.publish_raw("plant/pump-1/vibration", json.dumps(
            {"value": i, "ts": now - age_seconds + i}))
    await publisher.flush()
    async with running_source(cfg) as (source, got):
        await wait_for(lambda: len(got.samples) == 3, 10, "the backlog")
        health = source.health()
    if age_seconds < 30:
        # Late, not off: what the device measured 20 s ago keeps its time.
        assert [s.source_ts for s in got.samples] == [s.device_ts for s in got.samples]
        assert (health.counted, health.clock_note) == ({}, "")
    else:
        # Later than the limit: from these readings alone that cannot be told from a clock
        # 60 s behind, so they are evaluated on receive time and the note says both.
        assert all(s.device_ts is not None and s.source_ts - s.device_ts > 55
                   for s in got.samples)
        assert health.counted == {"clock_skew": 3}
        assert "behind (or its messages arrive that late)" in health.clock_note
