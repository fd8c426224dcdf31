"""Components chosen by `type`, their config module imported when a config names it: the
errors read as the discriminated union's did, and built models pass through unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import PlantBridgeConfig

ROOT = Path(__file__).resolve().parents[2]
MQTT = {"type": "mqtt", "name": "plant", "host": "127.0.0.1",
        "subscriptions": [{"pattern": "plant/+asset/+signal"}]}


def _errors(raw: dict[str, object]) -> list[tuple[str, tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        PlantBridgeConfig.model_validate(raw)
    return [(e["type"], tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_type_mistakes_are_named_as_before() -> None:
    assert _errors({"sources": [{"type": "profibus", "name": "x"}]}) == [
        ("union_tag_invalid", ("sources", 0), "Input tag 'profibus' found using 'type' does "
         "not match any of the expected tags: 'mqtt', 'opcua', 'modbus'")]
    assert _errors({"upstreams": [{"name": "x"}]}) == [
        ("union_tag_not_found", ("upstreams", 0),
         "Unable to extract tag using discriminator 'type'")]
    assert _errors({"sources": ["mqtt"]})[0][:2] == ("model_attributes_type", ("sources", 0))


def test_a_components_own_mistakes_keep_their_place() -> None:
    got = _errors({"sources": [MQTT, dict(MQTT, name="b", port="eighty", prot=1)]})
    assert {(kind, loc) for kind, loc, _ in got} == {
        ("int_parsing", ("sources", 1, "port")), ("extra_forbidden", ("sources", 1, "prot"))}


def test_built_models_pass_through_and_compare() -> None:
    cfg = PlantBridgeConfig.model_validate({"sources": [MQTT]})
    again = PlantBridgeConfig(sources=cfg.sources)
    assert again.sources[0] is cfg.sources[0] and again == cfg
    assert again.model_dump()["sources"][0]["subscriptions"][0]["pattern"] == \
        "plant/+asset/+signal"
    with pytest.raises(ValidationError, match="one of the 'mqtt', 'opcua', 'modbus' configs"):
        PlantBridgeConfig(sources=[cfg.gateway])


def test_a_kind_loads_when_a_config_names_it() -> None:
    probe = ("import sys\nfrom gateway.config import PlantBridgeConfig\n"
             "c = PlantBridgeConfig.model_validate({'gateway': {'site': 'mill'}, 'upstreams': "
             "[{'type': 'nats', 'name': 'b', 'servers': ['nats://127.0.0.1:4222'], "
             "'stream': 'EVENTS'}]})\n"
             "print(c.upstreams[0].site, "
             "sorted(m for m in ('nats', 'drivers.opcua.config') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "mill ['nats']"  # and it took the [gateway] site
