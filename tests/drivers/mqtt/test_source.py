"""End to end against a real Mosquitto: topics and payloads in, samples out; bad input counted."""

from __future__ import annotations

import json
import time

import pytest

from gateway.model import Quality, Source, SourceState
from simulators.mqtt_plant import MqttPlantPublisher
from simulators.scenario import SCENARIOS
from tests.drivers.mqtt.conftest import SecureBroker, TlsBroker, running_source, source_config
from tests.harness import Mosquitto, wait_for

PROTOCOLS = ["3.1.1", "5"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_published_values_arrive_as_samples(mosquitto: Mosquitto,
                                                  publisher: MqttPlantPublisher,
                                                  protocol: str) -> None:
    cfg = source_config(mosquitto.port, protocol=protocol, subscriptions=[
        {"pattern": "plant/+asset/+signal", "timestamp_path": "ts", "quality_path": "quality"},
        {"pattern": "raw/+asset/vib/+signal", "format": "value"},
    ], topics=[{"topic": "legacy/line3/PT-101", "asset": "press-1", "signal": "pressure",
                "value_path": "data.v", "timestamp_path": "data.t"}])
    async with running_source(cfg) as (source, got):
        assert isinstance(source, Source)
        await publisher.publish_raw("plant/pump-1/vibration", json.dumps(
            {"value": 7.3, "ts": 1_700_000_000.5}))
        await publisher.publish_raw("plant/pump-1/temperature", json.dumps(
            {"value": None, "quality": "bad", "ts": 1_700_000_001_000}))  # ms
        await publisher.publish_raw("raw/fan-1/vib/x-axis", "  -1.25e1\n")
        await publisher.publish_raw("legacy/line3/PT-101", json.dumps(
            {"data": {"v": "4.5", "t": "2023-11-14T22:13:20Z"}}))
        await publisher.publish_raw("plant/pump-2/running", "true")  # bare JSON, no ts
        await wait_for(lambda: len(got.samples) == 5, 10, "five samples")
        by_key = {(s.asset, s.signal): s for s in got.samples}
        # The payload's time is the device's (evidence); rules see the receive time.
        vib = by_key[("pump-1", "vibration")]
        assert (vib.value, vib.quality, vib.device_ts) == (7.3, Quality.GOOD, 1_700_000_000.5)
        temp = by_key[("pump-1", "temperature")]
        assert (temp.value, temp.quality, temp.device_ts) == (None, Quality.BAD, 1_700_000_001)
        assert by_key[("fan-1", "x-axis")].value == -12.5
        press = by_key[("press-1", "pressure")]
        assert (press.value, press.device_ts) == (4.5, 1_700_000_000.0)
        running = by_key[("pump-2", "running")]
        assert running.value == 1.0 and running.device_ts is None
        assert all(abs(s.source_ts - time.time()) < 10 for s in got.samples)
        health = source.health()
        assert health.state is SourceState.CONNECTED and health.samples_total == 5
        assert health.rejected == {}


async def test_bad_input_is_counted_and_good_input_still_passes(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    cfg = source_config(mosquitto.port, max_payload_bytes=64 * 1024, subscriptions=[
        {"pattern": "plant/+asset/+signal", "timestamp_path": "ts"},
        {"pattern": "raw/+asset/+signal", "format": "value"},
        {"pattern": "multi/+asset", "format": "json_fields", "timestamp_path": "ts"},
    ])
    async with running_source(cfg) as (source, got):
        bad = [
            ("plant/pump-1/vibration", b'{"value": 7.3'),  # malformed_json
            ("plant/pump-1/vibration", b"NaN"),  # a NaN literal (not JSON): nan
            ("plant/pump-1/vibration", b'{"value": Infinity}'),  # infinite
            ("plant/pump-1/vibration", b'{"value": 1, "unit": "\xb0C"}'),  # not_utf8
            ("multi/fan-1", b'{"vibration": NaN, "ts": 1.7e9}'),  # nan
            ("plant/pump-1/vibration", b'{"value": "abc"}'),  # not_a_number
            ("plant/pump-1/vibration", b'{"value": "NaN"}'),  # nan
            ("raw/pump-1/vibration", b"nan"),  # nan
            ("raw/pump-1/vibration", b"-inf"),  # infinite
            ("raw/pump-1/vibration", b"abc"),  # not_a_number
            ("raw/pump-1/vibration", b""),  # empty
            ("plant/pump-1/vibration", b"x" * (1024 * 1024)),  # too_large
            ("plant/pump-1/vibration", b'{"val": 3}'),  # no_value
            ("plant/pump-1/vibration", b'{"value": 3, "ts": "yesterday"}'),  # bad_timestamp
            ("plant//vibration", b"3"),  # empty asset level: no_mapping
            ("multi/fan-1", b"[1, 2]"),  # not_an_object (twice)
        ]
        for topic, payload in bad:
            await publisher.publish_raw(topic, payload)
        await publisher.publish_raw("plant/pump-1/vibration", json.dumps(
            [{"value": 1.0, "ts": 1_700_000_000}, {"value": "bad"}, {"value": 3.0}]))
        await publisher.publish_raw("multi/fan-1", json.dumps(
            {"vibration": 2.0, "temperature": "hot", "ts": 1.7e9}))
        await publisher.publish_raw("plant/pump-2/vibration", b"4.0")
        await wait_for(lambda: any(s.asset == "pump-2" for s in got.samples), 10,
                       "the good message after the bad ones")
        values = sorted((s.asset, s.signal, s.value) for s in got.samples)
        assert values == [("fan-1", "vibration", 2.0), ("pump-1", "vibration", 1.0),
                          ("pump-1", "vibration", 3.0), ("pump-2", "vibration", 4.0)]
        health = source.health()
        assert health.state is SourceState.CONNECTED
        assert health.rejected == {
            "malformed_json": 1, "not_a_number": 4, "nan": 4, "infinite": 2, "not_utf8": 1,
            "empty": 1,
            "too_large": 1, "no_value": 1, "bad_timestamp": 1, "no_mapping": 1,
            "not_an_object": 2,
        }
        assert all(s.value is None or s.value == s.value for s in got.samples)


async def test_username_and_password(secure_broker: SecureBroker) -> None:
    port = secure_broker.port
    good = source_config(port, username="gateway", password={"value": "s3cret-pw"})
    pub = MqttPlantPublisher("127.0.0.1", port, SCENARIOS["steady"], username="gateway",
                             password="s3cret-pw")
    async with running_source(good) as (_, got), pub:
        await pub.publish_raw("plant/pump-1/current", b"12.5")
        await wait_for(lambda: len(got.samples) == 1, 10, "sample through the secure broker")
    wrong = source_config(port, username="gateway", password={"value": "guess"},
                          client_id="intruder")
    async with running_source(wrong, wait_connected=False) as (source, _):
        await wait_for(lambda: source.health().state is SourceState.FAILED, 10,
                       "source FAILED on refused credentials")
        assert "refused" in source.health().detail



async def test_tls(tls_broker: TlsBroker) -> None:
    verified = source_config(tls_broker.tls_port, tls={"ca_file": str(tls_broker.ca_file)})
    pub = MqttPlantPublisher("127.0.0.1", tls_broker.port, SCENARIOS["steady"])
    async with running_source(verified) as (source, got), pub:
        await pub.publish_raw("plant/pump-1/current", b"11.5")
        await wait_for(lambda: len(got.samples) == 1, 10, "sample over TLS")
        assert got.samples[0].value == 11.5
    untrusted = source_config(tls_broker.tls_port, tls={}, client_id="untrusted")
    async with running_source(untrusted, wait_connected=False) as (source, _):
        await wait_for(lambda: "attempt 1" in source.health().detail, 10, "a failed attempt")
        assert source.health().state is SourceState.CONNECTING
        assert "certificate" in source.health().detail.lower()
    lab = source_config(tls_broker.tls_port, tls={"verify": False}, client_id="lab")
    async with running_source(lab) as (source, _):
        assert source.health().state is SourceState.CONNECTED


@pytest.mark.parametrize(("policy", "samples", "rejected"), [
    ("accept", 1, {}), ("ignore", 0, {"retained": 1})])
async def test_retained_messages(mosquitto: Mosquitto, publisher: MqttPlantPublisher,
                                 policy: str, samples: int, rejected: dict[str, int]) -> None:
    await publisher.publish_raw("plant/pump-1/running", b"1", retain=True)
    await publisher.flush()
    cfg = source_config(mosquitto.port, retained=policy)
    async with running_source(cfg) as (source, got):
        await publisher.publish_raw("plant/pump-1/current", b"12")  # live: always taken
        await wait_for(lambda: any(s.signal == "current" for s in got.samples), 10, "live")
        assert len(got.samples) == samples + 1
        assert source.health().rejected == rejected


async def test_missing_secret_is_reported_as_failed(mosquitto: Mosquitto) -> None:
    cfg = source_config(mosquitto.port, username="gateway",
                        password={"env": "PLANTBRIDGE_TEST_SURELY_UNSET"})
    async with running_source(cfg, wait_connected=False) as (source, _):
        await wait_for(lambda: source.health().state is SourceState.FAILED, 10, "FAILED")
        assert "PLANTBRIDGE_TEST_SURELY_UNSET" in source.health().detail


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_overlapping_routes_give_one_sample(mosquitto: Mosquitto,
                                                  publisher: MqttPlantPublisher,
                                                  protocol: str) -> None:
    """A v5 broker sends one copy per matching subscription; the first route wins, once."""
    cfg = source_config(mosquitto.port, protocol=protocol, subscriptions=[
        {"pattern": "plant/+asset/+signal"}, {"pattern": "plant/#", "asset": "any",
                                               "signal": "thing"}],
        topics=[{"topic": "plant/p9/x", "asset": "press-1", "signal": "pressure"}])
    async with running_source(cfg) as (source, got):
        await publisher.publish_raw("plant/p9/x", b"1")
        await publisher.publish_raw("plant/p1/vibration", b"2")
        await publisher.publish_raw("plant/odd", b"3")
        await publisher.publish_raw("plant/p1/current", b"4")  # the last one, as a marker
        await wait_for(lambda: any(s.value == 4 for s in got.samples), 10, "marker")
        assert sorted((s.asset, s.signal, s.value) for s in got.samples) == [
            ("any", "thing", 3.0), ("p1", "current", 4.0), ("p1", "vibration", 2.0),
            ("press-1", "pressure", 1.0)]
        copies = 4 if protocol == "5" else 0  # p9/x: 2, p1/vibration: 1, p1/current: 1
        await wait_for(lambda: source.overlap_copies == copies, 10, f"{copies} copies dropped")
        assert len(got.samples) == 4
        assert source.health().rejected == {}
