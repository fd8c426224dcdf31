"""`plantbridge record` runs beside the gateway without taking anything from it.

With the gateway's MQTT client id the broker would disconnect the gateway, and with its
persistent session the recorder would receive, and acknowledge, messages meant for the gateway:
maintenance events lost. The recorder listens under its own id with a clean session.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from rules.pbrec import read_columns
from tests.gateway.recorder import mqtt_config, publisher, start_recorder
from tests.harness import Mosquitto, wait_for_sync


def test_record_does_not_disturb_the_gateways_session(tmp_path: Path,
                                                     mosquitto: Mosquitto) -> None:
    # The default session: persistent, as "plantbridge-plant".
    cfg = mqtt_config(tmp_path, mosquitto.port, session="persistent")
    # Stands in for the running gateway: same client id, persistent session, QoS 1.
    got: list[bytes] = []
    disconnects: list[Any] = []
    subscribed = threading.Event()
    gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plantbridge-plant",
                     clean_session=False)
    gw.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    gw.on_disconnect = lambda _c, _u, _f, rc, _p: disconnects.append(rc)
    gw.on_subscribe = lambda *_: subscribed.set()
    gw.on_connect = lambda c, *_: c.subscribe("plant/+/+", qos=1)
    gw.connect("127.0.0.1", mosquitto.port)
    gw.loop_start()
    pub = publisher(mosquitto.port)
    out = tmp_path / "rec.pbrec"
    proc = start_recorder(cfg, out, 30)
    sent = 0

    def publish() -> None:
        nonlocal sent
        pub.publish("plant/pump-1/vibration", f'{{"value": {sent}, "ts": {sent}}}',
                    qos=1).wait_for_publish(5)
        sent += 1

    def recorded() -> bool:
        publish()
        return len(read_columns(out)) > 0

    try:
        assert subscribed.wait(10), "the stand-in gateway did not subscribe"
        wait_for_sync(out.exists, 15, "the recorder to start")
        # Publish until the recording holds samples (the recorder flushes every few seconds).
        wait_for_sync(recorded, 20, "samples in the recording", interval=0.1)
        for _ in range(20):
            publish()
        wait_for_sync(lambda: len(got) >= sent, 10, "the gateway to get every message")
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends the recording cleanly
        output, _ = proc.communicate(timeout=30)
        kicked = list(disconnects)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.loop_stop()
        pub.disconnect()
        gw.loop_stop()
        gw.disconnect()
    assert proc.returncode == 0, output
    assert kicked == [], "the recorder took the gateway's session"
    assert len(got) == sent  # every message reached the gateway, none twice
    assert len(read_columns(out)) > 0


RTU_AND_MQTT = """
[gateway]
state_dir = "{state}"
[[sources]]
type = "modbus"
name = "line-3"
transport = "rtu"
[sources.serial]
port = "/dev/ttyPLANTBRIDGE-test"
[sources.maps.press]
points = [{{ signal = "pressure", table = "holding", address = 0, type = "uint16" }}]
[[sources.devices]]
unit_id = 1
asset = "press-1"
map = "press"
{mqtt}
"""

MQTT = """
[[sources]]
type = "mqtt"
name = "plant"
port = {port}
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
"""


def _config(tmp_path: Path, mqtt_port: int | None) -> Path:
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "r.toml").write_text(
        '[[rule]]\nid = "v"\nkind = "threshold"\nasset = "press-1"\nsignal = "pressure"\n'
        'above = 7.1\n')
    cfg = tmp_path / "plantbridge.toml"
    mqtt_part = "" if mqtt_port is None else MQTT.format(port=mqtt_port)
    cfg.write_text(RTU_AND_MQTT.format(state=tmp_path, mqtt=mqtt_part))
    return cfg


def test_a_serial_line_is_left_to_the_gateway(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Two masters on one RS-485 line garble each other: record leaves it out and says why."""
    cfg = _config(tmp_path, None)
    assert main(["check", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["record", "--config", str(cfg), "--output", str(tmp_path / "r.pbrec"),
                 "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert "left out source 'line-3' (Modbus RTU on /dev/ttyPLANTBRIDGE-test)" in err
    assert "--source line-3" in err and "nothing to record" in err
    assert not (tmp_path / "r.pbrec").exists()


def test_record_names_an_unknown_source(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, None)
    assert main(["record", "--config", str(cfg), "--output", str(tmp_path / "r.pbrec"),
                 "--source", "line-9"]) == 1
    assert "no source named line-9; the config has line-3" in capsys.readouterr().err


def test_the_other_sources_are_recorded_with_a_note(tmp_path: Path, mosquitto: Mosquitto,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, mosquitto.port)
    out = tmp_path / "r.jsonl"
    assert main(["record", "--config", str(cfg), "--output", str(out), "--duration",
                 "0.5"]) == 0
    got = capsys.readouterr()
    assert "left out source 'line-3'" in got.err
    assert f"recorded 0 samples to {out}" in got.out and out.exists()
