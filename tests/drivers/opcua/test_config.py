"""Config validation: what a technician gets told when the OPC UA section is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers.opcua.config import OpcUaSourceConfig, ReadMode, split_node_id
from drivers.opcua.driver import OpcUaSource
from gateway.model import Source, SourceState

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "source-opcua.toml"
NODE = {"asset": "pump-1", "signal": "vibration",
        "node_id": "nsu=urn:plantbridge:sim;s=pump-1.vibration"}


def config(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": "opcua", "name": "plc", "endpoint": "opc.tcp://h:4840/",
                           "nodes": [NODE]}
    raw.update(overrides)
    return raw


def errors(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        OpcUaSourceConfig.model_validate(raw)
    return str(info.value)


def test_example_config_loads_and_builds() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())["sources"][0]
    cfg = OpcUaSourceConfig.model_validate(raw)
    source = cfg.build()
    assert isinstance(source, OpcUaSource) and isinstance(source, Source)
    assert source.name == "line3-plc"
    assert source.health().state is SourceState.STOPPED
    running = cfg.nodes[3]
    assert running.sampling(cfg.groups[running.group]).mode is ReadMode.POLL
    vib = cfg.nodes[0].sampling(cfg.groups["default"])
    assert (vib.deadband_value, vib.publishing_interval_ms) == (0.05, 500.0)


def test_security_without_certificate_files_names_the_field() -> None:
    text = errors(config(security={"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}))
    assert "security" in text
    assert "security.certificate_file is required with policy Basic256Sha256" in text


def test_security_with_missing_key_file(tmp_path: Path) -> None:
    cert = tmp_path / "c.der"
    cert.write_bytes(b"x")
    text = errors(config(security={"policy": "Aes256_Sha256_RsaPss", "certificate_file": cert,
                                   "private_key_file": tmp_path / "nope.pem"}))
    assert "security.private_key_file" in text and "does not exist" in text


def test_bare_namespace_index_is_refused() -> None:
    text = errors(config(nodes=[{**NODE, "node_id": "ns=2;s=pump-1.vibration"}]))
    assert "namespace URI" in text


def test_node_needs_exactly_one_address() -> None:
    assert "exactly one of node_id or browse_path" in errors(
        config(nodes=[{"asset": "a", "signal": "b"}]))


def test_unknown_keys_groups_and_duplicates_are_errors() -> None:
    assert "extra" in errors(config(sampling_ms=5)).lower()
    assert "unknown group 'fast'" in errors(config(nodes=[{**NODE, "group": "fast"}]))
    assert "mapped twice" in errors(config(nodes=[NODE, NODE]))
    assert "Input should be" in errors(config(security={"policy": "Basic128Rsa15"}))


def test_username_password_from_env() -> None:
    cfg = OpcUaSourceConfig.model_validate(config(
        auth={"kind": "username", "username": "gw", "password": {"env": "OPCUA_PW"}}))
    assert cfg.auth.kind == "username"


def test_split_node_id() -> None:
    assert split_node_id("nsu=urn:a:b;s=x.y") == ("urn:a:b", "s=x.y")
    assert split_node_id("ns=0;i=2258") == (None, "i=2258")
    assert split_node_id("i=85") == (None, "i=85")
