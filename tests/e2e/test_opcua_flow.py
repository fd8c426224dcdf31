"""OPC UA telemetry through the whole daemon: a degradation ramp and a failed sensor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.opcua_plant import OpcUaPlantSimulator
from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import free_port, wait_for

SENSOR_RULE = """
[[rule]]
id = "vib-sensor-failed"
kind = "bad_quality"
asset_pattern = "pump-*"
signal = "vibration"
limit_seconds = 0.5
title = "Vibration sensor failed on {asset}"
"""


def opcua_source(endpoint: str) -> str:
    nodes = "".join(f"""
[[sources.nodes]]
asset = "{asset}"
signal = "vibration"
node_id = "nsu=urn:plantbridge:sim;s={asset}.vibration"
""" for asset in ("pump-1", "pump-2"))
    return f"""
[[sources]]
type = "opcua"
name = "plc"
endpoint = "{endpoint}"
reconnect_initial_seconds = 0.2
reconnect_max_seconds = 1.0

[sources.groups.default]
sampling_interval_ms = 100
publishing_interval_ms = 100
{nodes}"""


@pytest.fixture
async def plc(request: pytest.FixtureRequest) -> AsyncIterator[OpcUaPlantSimulator]:
    sim = OpcUaPlantSimulator("127.0.0.1", free_port(), scenario=request.param, speed=5.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.mark.parametrize("plc", ["bearing-failure"], indirect=True)
async def test_degradation_ramp_gives_one_request(stack: Stack,
                                                  plc: OpcUaPlantSimulator) -> None:
    stack.write_config(vibration_rule(on_delay=0.3, off_delay=0.3) + SENSOR_RULE,
                       source=opcua_source(plc.endpoint))
    await stack.start_daemon()
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 30, "raise and clear upstream")
    await stack.settled()
    [req] = stack.sim.requests
    assert req["body"]["asset"] == "pump-1" and req["body"]["rule_id"] == "vib-high"
    assert stack.sim.status_updates[0]["request_id"] == req["id"]
    assert_exactly_once(stack.sim)


@pytest.mark.parametrize("plc", ["sensor-failure"], indirect=True)
async def test_failed_sensor_is_bad_quality_not_a_threshold_alarm(
        stack: Stack, plc: OpcUaPlantSimulator) -> None:
    stack.write_config(vibration_rule(on_delay=0.3, off_delay=0.3) + SENSOR_RULE,
                       source=opcua_source(plc.endpoint))
    await stack.start_daemon()
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 30,
                   "sensor failure raised and cleared upstream")
    await stack.settled()
    [req] = stack.sim.requests
    assert req["body"]["rule_id"] == "vib-sensor-failed" and req["body"]["asset"] == "pump-2"
    assert req["body"]["title"] == "Vibration sensor failed on pump-2"
    assert_exactly_once(stack.sim)
