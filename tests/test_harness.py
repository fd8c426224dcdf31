from __future__ import annotations

import socket
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import _PORTS_FROM, _SLICE, Mosquitto, free_port, wait_for_sync


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


def test_free_ports_come_from_this_workers_slice_below_the_ephemeral_range() -> None:
    """Outgoing connections take their local ports from the ephemeral range: a port picked
    there could be taken before a test's server binds it. free_port stays below that range,
    in a slice of its own per xdist worker, and does not hand out the same port twice soon."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    if low - 20000 >= 800:  # room for the slices (else free_port falls back to bind(0))
        assert low >= _PORTS_FROM + _SLICE
        assert all(_PORTS_FROM <= p < _PORTS_FROM + _SLICE for p in ports), ports
    for p in ports[:5]:  # each is free
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", p))
