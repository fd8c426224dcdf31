"""Config of the nats upstream and of the relay: examples load, mistakes are named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway import config as config_mod
from gateway.config import ConfigError
from gateway.relay.config import load_relay_config
from gateway.upstream.nats_config import NatsSinkConfig, inherit_site, subject_token

ROOT = Path(__file__).resolve().parents[3]


def sink_cfg(**over: object) -> NatsSinkConfig:
    return NatsSinkConfig.model_validate({"type": "nats", "name": "b", "stream": "S"} | over)


def test_the_example_loads_and_takes_the_gateway_site(tmp_path: Path) -> None:
    raw = tomllib.loads((ROOT / "config" / "examples" / "upstream-nats.toml").read_text())
    raw["gateway"] = {"site": "plant-9", "state_dir": str(tmp_path)}
    cfg = config_mod.validate(raw, "upstream-nats.toml")
    [up] = cfg.upstreams
    assert isinstance(up, NatsSinkConfig)
    assert up.site == "plant-9" and up.effective_gateway_id() == "plant-9"
    assert up.connect_options("x")["tls"] is not None  # tls:// servers: TLS, verified


def test_the_relay_example_loads(tmp_path: Path) -> None:
    cfg = load_relay_config(ROOT / "config" / "relay.toml")
    assert cfg.consumer.durable == "plantbridge-relay" and cfg.upstreams[0].name == "cmms"


def test_a_relay_never_forwards_back_to_nats(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[[upstreams]]\ntype = "nats"\nname = "loop"\nstream = "S"\n')
    with pytest.raises(ConfigError, match="not back to nats"):
        load_relay_config(path)


def test_credentials_map_to_the_client(tmp_path: Path) -> None:
    creds = tmp_path / "edge.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    opts = sink_cfg(auth={"kind": "creds", "file": str(creds)}).connect_options("n")
    assert opts["user_credentials"] == str(creds)
    opts = sink_cfg(auth={"kind": "user_password", "user": "u",
                          "password": {"value": "p"}}).connect_options("n")
    assert (opts["user"], opts["password"]) == ("u", "p")
    assert sink_cfg(auth={"kind": "token", "token": {"value": "t"}}).connect_options(
        "n")["token"] == "t"
    assert "tls" not in sink_cfg().connect_options("n")  # nats:// without a CA: plain


def test_a_missing_creds_file_is_named() -> None:
    with pytest.raises(ValidationError, match=r"creds file /nope\.creds does not exist"):
        sink_cfg(auth={"kind": "creds", "file": "/nope.creds"})


@pytest.mark.parametrize("template", ["{prefix}.{plant}.{asset}", "{prefix}..{asset}",
                                      "{prefix}.>.{asset}"])
def test_a_bad_subject_template_is_refused(template: str) -> None:
    with pytest.raises(ValidationError, match="subject_template"):
        sink_cfg(subject_template=template)


def test_tokens_lose_dots_spaces_and_wildcards() -> None:
    assert subject_token("pump 1.a>*") == "pump_1_a_"
    assert subject_token("") == "_"


def test_an_explicit_site_is_kept() -> None:
    raw = {"gateway": {"site": "a"}, "upstreams": [{"type": "nats", "site": "b"}]}
    assert inherit_site(raw)["upstreams"][0]["site"] == "b"


def test_a_relay_config_typo_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[consumer]\nmax_ack_pendng = 5\n\n[[upstreams]]\ntype = "rest"\n'
                    'name = "cmms"\nbase_url = "http://127.0.0.1:9"\n')
    with pytest.raises(ConfigError) as err:
        load_relay_config(path)
    [problem] = err.value.problems
    assert str(problem) == (f"{path}:2: consumer.max_ack_pendng: unknown key (check the "
                            "spelling; see config/examples/)")
