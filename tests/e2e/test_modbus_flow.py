"""Modbus telemetry through the whole daemon, using the shipped example register map."""

from __future__ import annotations

import re
from pathlib import Path

from simulators.modbus_plant import ModbusPlantSimulator
from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import free_port, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "source-modbus.toml"


def modbus_source(port: int) -> str:
    text = EXAMPLE.read_text()
    text = text[text.index("[[sources]]"):]
    text = re.sub(r"(?m)^port = \d+", f"port = {port}", text, count=1)
    return re.sub(r"(?m)^poll_interval_ms = \d+", "poll_interval_ms = 100", text)


async def test_degradation_over_modbus_gives_one_request(stack: Stack) -> None:
    port = free_port()
    async with ModbusPlantSimulator("127.0.0.1", port, "bearing-failure", speed=4.0):
        stack.write_config(vibration_rule(on_delay=0.3, off_delay=0.3),
                           source=modbus_source(port))
        await stack.start_daemon()
        await wait_for(lambda: len(stack.sim.status_updates) == 1, 30,
                       "raise and clear upstream")
        await stack.settled()
    [req] = stack.sim.requests
    assert req["body"]["asset"] == "pump-1" and req["body"]["rule_id"] == "vib-high"
    assert stack.sim.status_updates[0]["request_id"] == req["id"]
    assert_exactly_once(stack.sim)
