"""Config validation, topic patterns and routes; the commented example must load and build."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub
from pydantic import ValidationError

from drivers.mqtt.config import MqttSourceConfig, Protocol, SessionMode
from drivers.mqtt.driver import MqttSource
from drivers.mqtt.pool import MqttWorkerSource
from drivers.mqtt.routes import Router, TopicPattern
from gateway.model import Source, SourceState

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "source-mqtt.toml"


@pytest.mark.parametrize(("pattern", "topic", "captured"), [
    ("plant/+asset/+signal", "plant/pump-1/vibration", {"asset": "pump-1", "signal": "vibration"}),
    ("plant/+asset/+signal", "plant/pump-1/vibration/x", None),
    ("plant/+asset/+signal", "plant/pump-1", None),
    ("plant/+asset/+signal", "plant//vibration", None),  # an empty level names nothing
    ("plant/+asset/vibration/+signal", "plant/p1/vibration/x", {"asset": "p1", "signal": "x"}),
    ("plant/+asset/vibration/+signal", "plant/p1/temperature/x", None),
    ("plant/+asset/#", "plant/p1/a/b/c", {"asset": "p1"}),
    ("plant/+asset/#", "plant/p1", {"asset": "p1"}),  # '#' matches the parent level too
    ("plant/+/+signal", "plant/anything/current", {"signal": "current"}),
    ("+asset/+signal", "$SYS/broker", None),  # $-topics never match a leading wildcard
    ("#", "a/b", {}),
    ("fixed/topic", "fixed/topic", {}),
    ("fixed/topic", "fixed/topic2", None),
])
def test_topic_pattern(pattern: str, topic: str, captured: dict[str, str] | None) -> None:
    assert TopicPattern.parse(pattern).match(topic) == captured


def test_router_filters_and_precedence() -> None:
    cfg = config(subscriptions=[
        {"pattern": "plant/+asset/+signal", "qos": 0},
        {"pattern": "plant/+/+signal", "asset": "fixed", "qos": 1},  # same filter: max qos
        {"pattern": "site/#", "asset": "pump-1", "signal": "vibration", "format": "value"},
    ], topics=[{"topic": "plant/p9/x", "asset": "press-1", "signal": "pressure"}])
    router = Router(cfg.subscriptions, cfg.topics)
    assert router.filters == (("plant/p9/x", 1), ("plant/+/+", 1), ("site/#", 1))
    exact = router.route("plant/p9/x")
    assert exact is not None and (exact.asset, exact.signal) == ("press-1", "pressure")
    first = router.route("plant/p1/temp")
    assert first is not None and (first.asset, first.signal) == ("p1", "temp")
    fixed = router.route("site/a/b")
    assert fixed is not None and (fixed.asset, fixed.signal) == ("pump-1", "vibration")
    assert router.route("other/x") is None


def config(**raw: Any) -> MqttSourceConfig:
    base: dict[str, Any] = {"name": "m", "subscriptions": [{"pattern": "p/+asset/+signal"}]}
    base.update(raw)
    return MqttSourceConfig.model_validate(base)


@pytest.mark.parametrize(("raw", "message"), [
    ({"subscriptions": []}, "at least one"),
    ({"subscriptions": [{"pattern": "p/+asset"}]}, "no signal"),
    ({"subscriptions": [{"pattern": "p/+signal"}]}, "no asset"),
    ({"subscriptions": [{"pattern": "p/+machine/+signal"}]}, "not asset or signal"),
    ({"subscriptions": [{"pattern": "p/#/+asset/+signal"}]}, "must be the last"),
    ({"subscriptions": [{"pattern": "p/a+b/+asset/+signal"}]}, "whole level"),
    ({"subscriptions": [{"pattern": "p/+asset/+asset"}]}, "twice"),
    ({"subscriptions": [{"pattern": "p/+asset/+signal", "qos": 2}]}, "qos"),
    ({"subscriptions": [{"pattern": "p/+asset/+signal", "format": "value",
                         "timestamp_path": "ts"}]}, "carry no paths"),
    ({"subscriptions": [{"pattern": "p/+asset/+signal", "fields": ["a"]}]}, "json_fields"),
    ({"subscriptions": [{"pattern": "p/+asset", "format": "json_fields",
                         "signal_path": "s"}]}, "signal_path only"),
    ({"topics": [{"topic": "a/+", "asset": "x", "signal": "y"}]}, "exact topic"),
    ({"topics": [{"topic": "a/b", "asset": "x"}]}, "no signal"),
    ({"topics": [{"topic": "a", "asset": "x", "signal": "y"},
                 {"topic": "a", "asset": "x", "signal": "z"}]}, "listed twice"),
    ({"password": {"value": "x"}}, "needs a username"),
    ({"reconnect_initial_seconds": 5, "reconnect_max_seconds": 1}, "below"),
    ({"protocol": "3.1"}, "protocol"),
    ({"keepalive": 10}, "Extra inputs"),
    ({"client_id": ""}, "must not be empty"),
    ({"port": 0}, "port"),
])
def test_invalid_configs_say_what_is_wrong(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        config(**raw)
    assert message in str(err.value)


def test_defaults() -> None:
    cfg = config()
    assert cfg.protocol is Protocol.V5 and cfg.session is SessionMode.PERSISTENT
    assert cfg.effective_client_id == "plantbridge-m"
    assert cfg.max_payload_bytes == 256 * 1024 and cfg.subscriptions[0].qos == 1


def test_example_loads_and_builds() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    sources = raw["sources"]
    assert sources and all(s["type"] == "mqtt" for s in sources)
    for item in sources:
        cfg = MqttSourceConfig.model_validate(item)
        source = cfg.build()
        assert isinstance(source, MqttSource | MqttWorkerSource) and isinstance(source, Source)
        assert source.name == item["name"]
        assert source.health().state is SourceState.CONNECTING


_LEVEL = st.sampled_from(["a", "b", "", "$s"])


@given(st.lists(st.sampled_from(["a", "b", "", "+"]), min_size=1, max_size=4),
       st.booleans(), st.lists(_LEVEL, min_size=1, max_size=5))
def test_topic_pattern_agrees_with_paho(levels: list[str], tail: bool, topic: list[str]) -> None:
    """paho's own matcher is the oracle for anonymous wildcards."""
    pattern = "/".join([*levels, "#"] if tail else levels)
    name = "/".join(topic)
    assert (TopicPattern.parse(pattern).match(name) is not None) == topic_matches_sub(pattern,
                                                                                       name)


def test_example_validates_in_the_root_config() -> None:
    from gateway import config as root

    cfg = root.validate(tomllib.loads(EXAMPLE.read_text()), str(EXAMPLE))
    assert [s.name for s in cfg.sources] == ["line3-mqtt", "site-broker"]
    assert all(isinstance(s, MqttSourceConfig) for s in cfg.sources)
