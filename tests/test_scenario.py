from __future__ import annotations

import pytest

from simulators import scenario


def test_bearing_failure_crosses_alarm_and_returns() -> None:
    s = scenario.get("bearing-failure")
    vib = [s.values(t / 10)[("pump-1", "vibration")] for t in range(0, 300)]
    assert max(v for v in vib if v is not None) > 8.5
    assert vib[0] is not None and vib[0] < 3
    assert vib[-1] is not None and vib[-1] < 3


def test_sensor_failure_reports_none() -> None:
    s = scenario.get("sensor-failure")
    assert s.values(10)[("pump-2", "vibration")] is None
    assert s.values(20)[("pump-2", "vibration")] is not None


def test_unknown_scenario() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario.get("nope")
