"""Shared set-up of the `plantbridge record` tests: a config with one MQTT source, the recorder
as a real subprocess, and a publisher that keeps sending numbered samples."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

VIB_RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = {above}
clear_below = 6.0
on_delay_seconds = 2
"""


def mqtt_config(tmp_path: Path, port: int, session: str = "clean") -> Path:
    """plantbridge.toml with one MQTT source 'plant' on plant/<asset>/<signal>."""
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "r.toml").write_text(VIB_RULE.format(above=7.1))
    cfg = tmp_path / "plantbridge.toml"
    cfg.write_text(f"""
[gateway]
state_dir = "{tmp_path}"
[[sources]]
type = "mqtt"
name = "plant"
port = {port}
session = "{session}"
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
qos = 1
""")
    return cfg


def start_recorder(cfg: Path, out: Path, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "record", "--config",
                             str(cfg), "--output", str(out), "--duration", str(duration)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def publisher(port: int) -> mqtt.Client:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


@contextmanager
def publishing(port: int, every: float = 0.05) -> Iterator[None]:
    """pump-1 vibration 0, 1, 2, ... at QoS 1 until the block ends."""
    pub = publisher(port)
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.is_set():
            pub.publish("plant/pump-1/vibration", f'{{"value": {i}, "ts": {time.time()}}}',
                        qos=1)
            i += 1
            stop.wait(every)

    t = threading.Thread(target=run)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        pub.loop_stop()
        pub.disconnect()
