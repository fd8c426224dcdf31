"""Lean at rest: a config without OPC UA, Modbus or replay loads and wires the daemon without
importing their libraries (asyncua, pymodbus, numpy) or the simulators; nor, without a NATS
upstream, the NATS client; nor the config models of kinds it does not name; nor what only a
scrape or a page view needs (prometheus_client, the page renderer); nor, without a SAP PM or
Maximo upstream, their clients (identity_probe.py then has nothing to look up) or their
config models (the asset registry reads an upstream's `type` before importing one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.pipeline_bench import RULE

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[gateway]
site = "lean"
state_dir = "{state}"

[rules]
files = ["rules.toml"]

[[sources]]
type = "mqtt"
name = "plant"
host = "127.0.0.1"
port = 1883
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"

[[upstreams]]
type = "rest"
name = "cmms"
base_url = "http://127.0.0.1:9"
auth = {{ kind = "bearer", token = {{ value = "k" }} }}
"""
PROBE = """
import sys
from pathlib import Path
from gateway import config
from gateway.daemon import Daemon
Daemon(config.load(Path(sys.argv[1])))
heavy = ("asyncua", "pymodbus", "numpy", "simulators", "nats", "prometheus_client",
         "drivers.opcua.config", "drivers.modbus.config", "gateway.upstream.uns_config",
         "gateway.upstream.nats_config", "gateway.metrics", "gateway.page",
         "gateway.upstream.sap_pm", "gateway.upstream.maximo", "gateway.registry_online",
         "gateway.upstream.sap_pm_config", "gateway.upstream.maximo_config")
print(" ".join(m for m in heavy if m in sys.modules) or "none")
"""


def test_an_mqtt_and_rest_config_imports_no_unused_driver_library(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(RULE)
    path = tmp_path / "plantbridge.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "none"


def test_the_driver_packages_still_export_their_names() -> None:
    from drivers.mqtt import MqttSource, MqttSourceConfig
    from drivers.opcua import OpcUaSource, OpcUaSourceConfig

    assert MqttSourceConfig.model_fields["protocol"] is not None
    assert OpcUaSourceConfig.model_fields["endpoint"] is not None
    assert MqttSource.__name__ == "MqttSource" and OpcUaSource.__name__ == "OpcUaSource"
