"""MQTT source: paho-mqtt on the asyncio loop, topic routes, payload codecs, QoS 1 acked late."""

from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.driver import MqttSource

__all__ = ["MqttSource", "MqttSourceConfig"]
