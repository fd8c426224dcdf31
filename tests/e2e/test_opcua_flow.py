"""OPC UA telemetry through the whole daemon: a degradation ramp and a failed sensor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators import scenario as plant
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


async def test_kill_9_mid_episode_then_the_value_sent_again_gives_one_request(
        stack: Stack) -> None:
    """An OPC UA server sends each monitored item's current value again on every new
    subscription, so a daemon killed mid-episode (kill -9, maybe before the request's receipt
    was stored) reads the alarm value again when it comes back. The rule state it kept makes
    that the same episode: one request, and its clear, upstream."""
    vibration = {"pump-1": 2.5}
    steady = plant.get("steady")
    sim = OpcUaPlantSimulator("127.0.0.1", free_port())
    sim.scenario = plant.Scenario("held", "pump-1 vibration as the test sets it", 3600.0, {
        **steady.signals, ("pump-1", "vibration"): lambda _t: vibration["pump-1"]})
    await sim.start()
    try:
        port = await stack.spawn_up(vibration_rule(on_delay=0.3, off_delay=0.3),
                                    source=opcua_source(sim.endpoint))
        vibration["pump-1"] = 9.0
        await wait_for(lambda: len(stack.sim.requests) == 1, 20, "the request")
        stack.power_cut()
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        # both nodes report every 100 ms: pump-1's 9.0 has been read again and evaluated
        await stack.wait_evaluated(port, 20)
        vibration["pump-1"] = 2.5
        await wait_for(lambda: len(stack.sim.status_updates) == 1, 20, "the clear")
        await stack.wait_drained(port)
        [req] = stack.sim.requests
        assert stack.sim.status_updates[0]["request_id"] == req["id"]
        assert_exactly_once(stack.sim)
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            await stack.terminate()
        await sim.stop()
