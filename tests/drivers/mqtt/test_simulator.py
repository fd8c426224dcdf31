"""The MQTT plant publisher: its messages, and its scenarios through the real driver."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gateway.model import Quality
from simulators.mqtt_plant import MqttPlantPublisher
from simulators.scenario import SCENARIOS
from tests.drivers.mqtt.conftest import running_source, source_config
from tests.harness import Mosquitto, wait_for

ROOT = Path(__file__).parents[3]


def test_message_shapes() -> None:
    scenario = SCENARIOS["sensor-failure"]
    pub = MqttPlantPublisher("127.0.0.1", 1, scenario)
    msgs = dict(pub.messages(6.0, 1_700_000_006.0))
    assert len(msgs) == len(scenario.signals)
    assert json.loads(msgs["plant/pump-2/vibration"]) == {"value": None, "quality": "bad",
                                                          "ts": 1_700_000_006.0}
    body = json.loads(msgs["plant/pump-1/temperature"])
    assert body == {"value": scenario.values(6.0)[("pump-1", "temperature")],
                    "ts": 1_700_000_006.0}
    plain = dict(MqttPlantPublisher("h", 1, scenario, payload_format="value",
                                    topic_prefix="x/").messages(6.0, 0))
    assert "x/pump-2/vibration" not in plain  # a failed sensor says nothing
    assert float(plain["x/pump-1/current"]) == scenario.values(6.0)[("pump-1", "current")]
    fields = dict(MqttPlantPublisher("h", 1, scenario, payload_format="json_fields")
                  .messages(6.0, 5.0))
    assert set(fields) == {"plant/pump-1", "plant/pump-2", "plant/fan-1"}
    assert json.loads(fields["plant/pump-2"])["vibration"] is None


async def test_sped_up_bearing_failure_through_the_driver(mosquitto: Mosquitto) -> None:
    scenario = SCENARIOS["bearing-failure"]
    pub = MqttPlantPublisher("127.0.0.1", mosquitto.port, scenario, interval_seconds=0.05,
                             speed=20)
    cfg = source_config(mosquitto.port)
    async with running_source(cfg) as (source, got):
        await asyncio.wait_for(pub.run(duration_seconds=10), 10)
        expected = 11 * len(scenario.signals)  # t = 0, 1, ..., 10 scenario seconds
        await wait_for(lambda: len(got.samples) == expected, 10, f"{expected} samples")
        vib = sorted((s.device_ts or 0.0, s.value) for s in got.samples
                     if (s.asset, s.signal) == ("pump-1", "vibration"))
        assert all(ts > 0 for ts, _ in vib)  # each carries the scenario's (device) time
        start = vib[0][0]
        assert [round(ts - start, 6) for ts, _ in vib] == [float(t) for t in range(11)]
        profile = scenario.signals[("pump-1", "vibration")]
        assert [v for _, v in vib] == pytest.approx([profile(t) for t in range(11)])
        assert max(v for _, v in vib if v is not None) > 7.1  # the alarm level is crossed
        assert source.health().rejected == {}


async def test_sensor_failure_as_json_fields(mosquitto: Mosquitto) -> None:
    scenario = SCENARIOS["sensor-failure"]
    pub = MqttPlantPublisher("127.0.0.1", mosquitto.port, scenario, interval_seconds=0.05,
                             speed=40, payload_format="json_fields")
    cfg = source_config(mosquitto.port, subscriptions=[
        {"pattern": "plant/+asset", "format": "json_fields", "timestamp_path": "ts"}])
    async with running_source(cfg) as (_, got):
        await asyncio.wait_for(pub.run(duration_seconds=20), 10)
        await wait_for(lambda: len(got.samples) == 11 * len(scenario.signals), 10, "samples")
        bad = [s for s in got.samples if s.quality is Quality.BAD]
        assert bad and {(s.asset, s.signal) for s in bad} == {("pump-2", "vibration")}
        assert all(s.value is None for s in bad)
        assert len(bad) == 5  # t = 6, 8, 10, 12, 14 fall in the failure window [5, 15)


async def test_cli(mosquitto: Mosquitto) -> None:
    cfg = source_config(mosquitto.port)
    async with running_source(cfg) as (_, got):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.mqtt_plant", "--port", str(mosquitto.port),
            "--scenario", "steady", "--duration", "2", "--speed", "20", "--interval", "0.05",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        # t = 0, 1, 2 x 12 signals
        assert "published 36 messages (0 bad on purpose)" in out.decode()
        await wait_for(lambda: len(got.samples) == 36, 10, "36 samples from the CLI")


async def test_garbage_injection_is_counted_and_good_data_flows(mosquitto: Mosquitto) -> None:
    scenario = SCENARIOS["steady"]
    pub = MqttPlantPublisher("127.0.0.1", mosquitto.port, scenario, interval_seconds=0.02,
                             speed=50, garbage_every=1)
    cfg = source_config(mosquitto.port)
    async with running_source(cfg) as (source, got):
        await asyncio.wait_for(pub.run(duration_seconds=4), 10)  # t = 0, 1, 2, 3, 4
        assert pub.garbage_sent == 5
        await wait_for(lambda: sum(source.health().rejected.values()) == 5, 10, "5 rejections")
        assert source.health().rejected == {"malformed_json": 1, "nan": 1, "not_a_number": 1,
                                            "empty": 1, "infinite": 1}
        await wait_for(lambda: len(got.samples) == 5 * len(scenario.signals), 10, "samples")
