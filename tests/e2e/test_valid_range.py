"""A broken sensor's sentinel (6553.5 from a dead I/O card, -9999, 1e300) is bad data, not a
process value: with a valid range on the source it raises the sensor-failure rule, never the
high-vibration one, and is counted and logged.

Black box: the daemon as a subprocess, a real Mosquitto, the CMMS simulator counting what
arrived. Without `[[sources.valid_ranges]]` the first sentinel raises "vib-high" and the
test fails on the count of those requests.
"""

from __future__ import annotations

import asyncio

from tests.e2e.never_twice import FENCE_RULE, expect_exactly, threshold_rule
from tests.e2e.stack import VIBRATION_RANGE, Stack
from tests.harness import free_port, wait_for

SENSOR_FAILED = """
[[rule]]
id = "vib-sensor-failed"
kind = "bad_quality"
asset = "pump-1"
signal = "vibration"
limit_seconds = 0.5
title = "Vibration sensor failed on {asset}"
"""



def _titles(stack: Stack, word: str) -> list[dict[str, object]]:
    return [r for r in stack.requests_for("pump-1") if word in str(r["body"]["title"])]


async def test_sentinel_values_raise_the_sensor_rule_not_the_process_rule(stack: Stack) -> None:
    port = free_port()
    stack.write_config(threshold_rule("vib-high", "vibration") + SENSOR_FAILED + FENCE_RULE,
                       http_port=port, source=stack.mqtt_source() + VIBRATION_RANGE)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)

    await stack.play("pump-1", [3.0, 3.0])
    # A dead card reads full scale for a while, a PLC's "no value", a broken decoder's number:
    # the bad-quality rule's 0.5 s pass while they keep coming.
    sentinels = [6553.5, -9999.0, 1e300]
    await stack.play("pump-1", sentinels * 6, step_seconds=0.05)
    failed = await expect_exactly(1, lambda: _titles(stack, "sensor failed"),
                                  "sensor-failure request", 20, lambda: stack.fence(port))
    assert not _titles(stack, "vib-high"), "a sentinel was taken for a process value"

    st = await stack.subprocess_status(port)
    assert st is not None
    (plant,) = [s for s in st["sources"] if s["name"] == "plant"]
    assert plant["rejected"].get("out_of_range") == len(sentinels) * 6, plant
    assert "out of valid range: pump-1 vibration 1e+300 (valid 0..50)" in plant["detail"], plant
    log = stack.daemon_log()
    assert log.count("is outside its valid range 0..50") == 1, log[-3000:]

    # The sensor reads again: the failure clears, and a real excursion still raises.
    await stack.play("pump-1", [3.0, 3.0, 3.0])
    await wait_for(lambda: bool(stack.updates_for("pump-1")), 20, "the sensor failure cleared")
    assert "pump-1 vibration reads in range again (3.0)" in stack.daemon_log()
    st = await stack.subprocess_status(port)
    assert st is not None and "out of valid range" not in st["sources"][0]["detail"], st
    await stack.play("pump-1", [9.0, 9.0])
    await expect_exactly(1, lambda: _titles(stack, "vib-high"), "vib-high request", 20,
                         lambda: stack.fence(port))
    assert len(_titles(stack, "sensor failed")) == 1 and failed
    assert {u["request_id"] for u in stack.updates_for("pump-1")} == {failed[0]["id"]}
    await asyncio.wait_for(stack.terminate(), 40)
