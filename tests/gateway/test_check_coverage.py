"""`check` compares rules with what the configured sources can produce (issue 10): an error
where the sources name their signals, a warning where a topic wildcard names them."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.modbus.config import ModbusSourceConfig
from drivers.mqtt.config import MqttSourceConfig
from drivers.opcua.config import OpcUaSourceConfig
from gateway.cli import main
from gateway.produces import Produced
from tests.gateway.test_check import check, line_of, rule

MODBUS = """
[[sources]]
type = "modbus"
name = "line3-plc"
host = "127.0.0.1"
[[sources.devices]]
unit_id = 1
asset = "pump-1"
points = [{ signal = "vibration", table = "holding", address = 0, type = "float32" },
          { signal = "running", table = "coil", address = 0, type = "bool" }]
"""

OPCUA = """
[[sources]]
type = "opcua"
name = "line3-opc"
endpoint = "opc.tcp://127.0.0.1:4840"
nodes = [{ asset = "fan-1", signal = "current", node_id = "nsu=urn:sim;s=fan1.current" }]
"""

MQTT_TOPICS = """
[[sources]]
type = "mqtt"
name = "plant"
[[sources.topics]]
topic = "line3/p2/vib"
asset = "pump-2"
signal = "vibration"
[[sources.subscriptions]]
pattern = "line3/+asset/temperature"
signal = "temperature"
"""

WILDCARD = """
[[sources]]
type = "mqtt"
name = "plant"
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
"""


def write(tmp: Path, rules: str, sources: str) -> Path:
    (tmp / "rules.d").mkdir(exist_ok=True)
    (tmp / "rules.d" / "r.toml").write_text(rules)
    path = tmp / "plantbridge.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp}"\n[rules]\nfiles = ["rules.d/*.toml"]\n'
                    + sources)
    return path


PATTERN_RULE = """
[[rule]]
id = "{id}"
kind = "threshold"
asset_pattern = "{pattern}"
signal = "{signal}"
above = 7.1
"""


def test_rules_fed_by_known_signals_pass(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rules = (rule("a") + rule("b", "fan-1", "current") + rule("c", "pump-2")
             + rule("d", "pump-7", "temperature")
             + PATTERN_RULE.format(id="e", pattern="pump-*", signal="vibration"))
    code, out, err = check(capsys, "--config", str(write(tmp_path, rules,
                                                         MODBUS + OPCUA + MQTT_TOPICS)))
    assert code == 0, err
    assert "5 rules (4 rule instances" in out
    # Only the rule that a route with an asset wildcard might feed is left open.
    [warning] = err.splitlines()
    assert warning.endswith("sources[2] 'plant': topic line3/+asset/temperature takes asset "
                            "names from the data, so whether it feeds these rules shows only "
                            "when data arrives: d")


def test_a_rule_no_source_can_feed_is_an_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rules = (rule("typo-asset", "pump-9") + rule("typo-signal", "pump-1", "vibraton")
             + PATTERN_RULE.format(id="no-fan-vib", pattern="fan-*", signal="vibration"))
    path = write(tmp_path, rules, MODBUS + OPCUA + MQTT_TOPICS)
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1
    file = tmp_path / "rules.d" / "r.toml"
    assert (f"{file}:2: rule 'typo-asset': signal: no configured source produces 'vibration' "
            "for 'pump-9'; the sources produce fan-1/current, pump-1/running, "
            "pump-1/vibration, pump-2/vibration") in err
    assert "rule 'typo-signal': signal: no configured source produces 'vibraton' for " \
           "'pump-1'" in err
    assert "rule 'no-fan-vib': signal: no configured source produces 'vibration' for assets " \
           "matching 'fan-*'" in err
    assert "3 problem(s)" in err


def test_suppress_and_combination_signals_are_checked(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rules = rule("muted") + 'suppress_while = { signal = "maintenance_mode", equals = 1 }\n' + """
[[rule]]
id = "dry"
kind = "combination"
asset = "pump-1"
all_of = [{ signal = "running", above = 0.5 }, { signal = "flow", below = 1.0 }]
"""
    code, _, err = check(capsys, "--config", str(write(tmp_path, rules, MODBUS)))
    assert code == 1, err
    assert "rule 'muted': suppress_while: no configured source produces 'maintenance_mode'" \
        in err
    assert "rule 'dry': all_of: no configured source produces 'flow'" in err
    assert "'running'" not in err.split("rule 'dry'")[1].split("\n")[0]


def test_a_named_wildcard_is_a_warning_once_per_route(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = rule("a", "pump-9") + rule("b", "fan-1", "current")
    path = write(tmp_path, rules, WILDCARD)
    code, out, err = check(capsys, "--config", str(path))
    assert code == 0 and "ok:" in out
    [warning] = err.splitlines()
    assert warning == (f"warning: {path}:{line_of(path, '[[sources]]')}: sources[0] 'plant': "
                       "topic plant/+asset/+signal takes asset and signal names from the data, "
                       "so whether it feeds these rules shows only when data arrives: a, b")
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 1  # run unaffected


def test_what_each_source_kind_produces() -> None:
    modbus = ModbusSourceConfig.model_validate({
        "name": "m", "host": "h", "maps": {"pump": {"points": [
            {"signal": "vibration", "table": "input", "address": 0, "type": "int16"}]}},
        "devices": [{"unit_id": 1, "asset": "pump-1", "map": "pump"},
                    {"unit_id": 2, "asset": "pump-2", "map": "pump",
                     "points": [{"signal": "flow", "asset": "meter-2", "table": "input",
                                 "address": 5, "type": "int16"}]}]})
    assert {(r.asset, r.signal) for r in modbus.produces().routes} == {
        ("pump-1", "vibration"), ("pump-2", "vibration"), ("meter-2", "flow")}
    opc = OpcUaSourceConfig.model_validate({
        "name": "o", "endpoint": "opc.tcp://h:4840",
        "nodes": [{"asset": "a", "signal": "s", "node_id": "nsu=urn:sim;s=x"}]})
    assert [(r.asset, r.signal) for r in opc.produces().routes] == [("a", "s")]
    mqtt = MqttSourceConfig.model_validate({"name": "q", "subscriptions": [
        {"pattern": "x/+asset/+signal"},
        {"pattern": "y/+asset", "signal": "temperature"},
        {"pattern": "z/#", "format": "json_fields", "asset_path": "id",
         "fields": ["a", "b"]}],
        "topics": [{"topic": "t/1", "asset": "p", "signal": "s"},
                   {"topic": "t/2", "asset": "p", "format": "json_fields"}]})
    assert [(r.asset, r.signal) for r in mqtt.produces().routes] == [
        (None, None), (None, "temperature"), (None, "a"), (None, "b"), ("p", "s"), ("p", None)]
    assert Produced("p", "s", "x").exact and not Produced(None, "s", "x").exact


def test_a_valid_range_its_source_cannot_deliver_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in a valid range would leave the sensor unguarded without a word: where the
    source names its signals, check says the range checks nothing."""
    def with_range(signal: str) -> Path:
        ranged = MODBUS + f'[[sources.valid_ranges]]\nsignal = "{signal}"\nmax = 50.0\n'
        return write(tmp_path, rule("a"), ranged)

    path = with_range("vibraton")
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1, err
    assert (f"{path}:{line_of(path, '[[sources.valid_ranges]]')}: sources[0] 'line3-plc': "
            "valid_ranges[0]: this source produces no 'vibraton' for assets matching '*', so "
            "this range checks nothing; it produces pump-1/running, pump-1/vibration") in err, err
    assert check(capsys, "--config", str(with_range("vibration")))[0] == 0
