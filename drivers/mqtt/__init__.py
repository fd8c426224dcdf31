"""MQTT source: paho-mqtt on the asyncio loop, topic routes, payload codecs, QoS 1 acked late.

The names below are loaded on first use: the config union imports `drivers.mqtt.config` for
every config, and importing the package must not pull in paho where no MQTT source is
configured. `MqttSourceConfig.build()` imports the driver when it is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.mqtt.config import MqttSourceConfig
    from drivers.mqtt.driver import MqttSource

__all__ = ["MqttSource", "MqttSourceConfig"]
_WHERE = {"MqttSource": "drivers.mqtt.driver", "MqttSourceConfig": "drivers.mqtt.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
