from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import Mosquitto, wait_for_sync


def test_mosquitto_fixture_is_a_real_broker(mosquitto: Mosquitto) -> None:
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe("t/#", qos=1)
    c.loop_start()
    try:
        wait_for_sync(lambda: c.is_connected(), 5, "connect")
        c.publish("t/x", b"hello", qos=1).wait_for_publish(5)
        wait_for_sync(lambda: got == [b"hello"], 5, "message round trip")
    finally:
        c.loop_stop()
        c.disconnect()
