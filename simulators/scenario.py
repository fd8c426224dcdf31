"""The simulated plant: assets, their signals, and scenarios as functions of elapsed time.

Every machine simulator (MQTT, OPC UA, Modbus) plays the same plant, so a rule written for the
demo works whatever protocol carries the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Profile = Callable[[float], float | None]  # elapsed seconds -> value (None: sensor failed)


def steady(level: float, ripple: float = 0.0, period_seconds: float = 7.0) -> Profile:
    """A constant level with a small deterministic ripple."""
    return lambda t: level + ripple * math.sin(2 * math.pi * t / period_seconds)


def ramp_hold_fall(base: float, peak: float, start: float, rise: float, hold: float,
                   fall: float, ripple: float = 0.0) -> Profile:
    """Base level, linear climb to `peak`, hold, linear fall back to base: a bearing episode."""

    def f(t: float) -> float:
        r = ripple * math.sin(2 * math.pi * t / 3.0)
        if t < start:
            return base + r
        t -= start
        if t < rise:
            return base + (peak - base) * t / rise + r
        t -= rise
        if t < hold:
            return peak + r
        t -= hold
        if t < fall:
            return peak - (peak - base) * t / fall + r
        return base + r

    return f


def fails_between(profile: Profile, start: float, end: float) -> Profile:
    """The sensor reports no value (bad quality) between `start` and `end`."""
    return lambda t: None if start <= t < end else profile(t)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration_seconds: float
    signals: Mapping[tuple[str, str], Profile]  # (asset, signal) -> profile

    def values(self, elapsed: float) -> dict[tuple[str, str], float | None]:
        return {key: profile(elapsed) for key, profile in self.signals.items()}


ASSETS = ("pump-1", "pump-2", "fan-1")
SIGNALS = ("vibration", "temperature", "current", "running")
UNITS = {"vibration": "mm/s", "temperature": "Cel", "current": "A", "running": "1"}


def _healthy(asset: str) -> dict[tuple[str, str], Profile]:
    return {
        (asset, "vibration"): steady(2.5, 0.2),
        (asset, "temperature"): steady(45.0, 0.5),
        (asset, "current"): steady(12.0, 0.3),
        (asset, "running"): steady(1.0),
    }


def _plant(**overrides: Profile) -> dict[tuple[str, str], Profile]:
    signals: dict[tuple[str, str], Profile] = {}
    for asset in ASSETS:
        signals.update(_healthy(asset))
    for name, profile in overrides.items():
        asset, signal = name.rsplit("__", 1)
        signals[(asset.replace("_", "-"), signal)] = profile
    return signals


SCENARIOS: dict[str, Scenario] = {
    "steady": Scenario("steady", "all assets healthy", 30.0, _plant()),
    "bearing-failure": Scenario(
        "bearing-failure",
        "pump-1 vibration climbs past the alarm level (7.1 mm/s), holds, then falls back",
        30.0,
        _plant(
            pump_1__vibration=ramp_hold_fall(2.5, 9.0, start=3, rise=4, hold=8, fall=3,
                                             ripple=0.1),
            pump_1__temperature=ramp_hold_fall(45, 68, start=4, rise=6, hold=6, fall=6),
        ),
    ),
    "sensor-failure": Scenario(
        "sensor-failure",
        "pump-2 vibration sensor fails (bad quality) for 10 s, values otherwise normal",
        30.0,
        _plant(pump_2__vibration=fails_between(steady(2.5, 0.2), 5, 15)),
    ),
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
