"""The asset registry file: strict loading with lines, look-ups, merging over asset_map, and what
`plantbridge check` says about it (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.cli import main
from gateway.registry import RegistryFileError, load_registry, parse_registry
from gateway.upstream.maximo import MaximoSinkConfig
from gateway.upstream.sap_pm import SapPmSinkConfig, TechnicalObjectType

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
[assets.pump-1]
line = "line-2"
area = "utilities"
maximo = { assetnum = "PUMP-1", siteid = "BEDFORD", location = "BR430" }
sap = { equipment = "210100094", planning_plant = "1010", planner_group = "IH1" }

[[assets.pump-1.spare_parts.BEARING]]
material = "BRG-6205"
quantity = 2
unit = "EA"
plant = "1010"
storage_location = "0001"

[assets."line2.fan-1"]
area = "hall-a"
sap = { functional_location = "1010-CWS-WCS-CWCP1" }
"""

RULE = """
[[rule]]
id = "{id}"
kind = "threshold"
{target}
signal = "vibration"
above = 7.1
clear_below = 6.0
"""

MQTT = """
[[sources]]
type = "mqtt"
name = "plant"
port = 1883
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
"""

SAP = """
[[upstreams]]
type = "sap_pm"
name = "sap"
base_url = "http://127.0.0.1:9"
sap_client = "100"
auth = {{ user = "PB_COMM", password = {{ value = "secret" }} }}
{extra}
"""


def write(tmp: Path, rules: list[str], registry: str | None, upstream_extra: str = "") -> Path:
    (tmp / "rules.d").mkdir(exist_ok=True)
    (tmp / "rules.d" / "r.toml").write_text("".join(rules))
    assets = ""
    if registry is not None:
        (tmp / "assets.toml").write_text(registry)
        assets = 'assets_file = "assets.toml"\n'
    path = tmp / "plantbridge.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp}"\n{assets}\n'
                    '[rules]\nfiles = ["rules.d/*.toml"]\n'
                    f"{MQTT}{SAP.format(extra=upstream_extra)}")
    return path


def rule(id: str, asset: str | None = None, pattern: str | None = None) -> str:
    target = f'asset = "{asset}"' if asset else f'asset_pattern = "{pattern}"'
    return RULE.format(id=id, target=target)


def test_lookups_by_canonical_id() -> None:
    reg = parse_registry(GOOD, "assets.toml")
    assert reg.line_of("pump-1") == "line-2"
    assert reg.area_of("pump-1") == "utilities"
    assert reg.line_of("line2.fan-1") is None and reg.area_of("line2.fan-1") == "hall-a"
    assert reg.line_of("nobody") is None and reg.area_of("nobody") is None
    mx = reg.identity("pump-1", "maximo")
    assert mx is not None and (mx.assetnum, mx.siteid, mx.location) == ("PUMP-1", "BEDFORD",
                                                                        "BR430")
    sap = reg.identity("line2.fan-1", "sap_pm")
    assert sap is not None and not sap.is_equipment
    assert sap.technical_object == "1010-CWS-WCS-CWCP1"
    assert reg.identity("line2.fan-1", "maximo") is None
    parts = reg.spare_parts("pump-1", "BEARING")
    assert [(p.material, p.quantity, p.unit, p.plant, p.storage_location) for p in parts] == [
        ("BRG-6205", 2.0, "EA", "1010", "0001")]
    assert reg.spare_parts("pump-1", "SEAL") == ()


def test_every_mistake_named_with_its_line(tmp_path: Path) -> None:
    text = GOOD + """
[assets.pump-2]
lin = "line-2"
sap = { equipment = "210100095", functional_location = "1010-X" }

[[assets.pump-2.spare_parts.SEAL]]
material = "SEAL-1"
quantity = 0
unit = "EA"
plant = "1010"
storage_location = "0001"

[assets."bad id"]
maximo = { assetnum = 'P"1' }
"""
    path = tmp_path / "assets.toml"
    path.write_text(text)
    with pytest.raises(RegistryFileError) as err:
        load_registry(path)
    said = [str(p) for p in err.value.problems]
    lines = text.splitlines()

    def at(fragment: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if fragment in line)

    assert f"{path}:{at('lin = ')}: asset 'pump-2': lin: unknown key; did you mean 'line'?" \
        in said
    both = at('functional_location = "1010-X')
    assert any(s.startswith(f"{path}:{both}: asset 'pump-2': "
                            "sap: give exactly one of equipment or functional_location")
               for s in said)
    assert any(s.startswith(f"{path}:{at('quantity = 0')}: asset 'pump-2': "
                            "spare_parts.SEAL[0].quantity: must be more than 0")
               for s in said), said
    assert any(f":{at('bad id')}: asset 'bad id'" in s and "letters, digits" in s
               for s in said), said
    assert len(said) == 5, said  # the quote in assetnum too


def test_broken_toml_and_missing_file_are_plain(tmp_path: Path) -> None:
    with pytest.raises(RegistryFileError) as err:
        parse_registry('[assets.p]\nline = "a"\narea =\n', "assets.toml")
    assert str(err.value) == "assets.toml:3: not valid TOML: invalid value"
    with pytest.raises(RegistryFileError) as err:
        load_registry(tmp_path / "none.toml")
    assert str(err.value).endswith("none.toml: file not found")


def test_registry_merges_into_asset_map_and_wins(tmp_path: Path) -> None:
    own = ('asset_map = { pump-1 = { technical_object = "999" }, '
           'old-1 = { technical_object = "210100096" } }')
    path = write(tmp_path, [rule("a", "pump-1"), rule("b", "old-1"), rule("c", "line2.fan-1")],
                 GOOD, own)
    found = config_mod.examine(path)
    assert not found.problems, [str(p) for p in found.problems]
    assert found.loaded is not None
    sap = found.loaded.config.upstreams[0]
    assert isinstance(sap, SapPmSinkConfig)
    assert sap.asset_map["pump-1"].technical_object == "210100094"  # the registry's
    assert sap.asset_map["pump-1"].planner_group == "IH1"
    assert sap.asset_map["old-1"].technical_object == "210100096"  # the asset_map's own
    assert sap.asset_map["line2.fan-1"].object_type is TechnicalObjectType.FUNCTIONAL_LOCATION
    assert found.loaded.registry.line_of("pump-1") == "line-2"
    warned = [str(w) for w in found.warnings]
    assert any("asset 'pump-1': upstreams[0] 'sap': asset_map names it equipment 999, the "
               "asset registry equipment 210100094 (planning plant 1010, planner group IH1); "
               "the registry's is used" in w for w in warned), warned


def test_maximo_registry_identity_reaches_the_sink_config() -> None:
    reg = parse_registry(GOOD, "assets.toml")
    from gateway.registry import with_registry

    cfg = MaximoSinkConfig.model_validate({
        "type": "maximo", "name": "mx", "base_url": "http://127.0.0.1:9", "siteid": "BEDFORD",
        "auth": {"kind": "api_key", "key": {"value": "k"}}})
    merged = with_registry(cfg, reg)
    assert merged.asset_map["pump-1"].assetnum == "PUMP-1"
    assert merged.asset_map["pump-1"].location == "BR430"
    assert "line2.fan-1" not in merged.asset_map  # it has no Maximo identity


def test_check_names_rule_assets_an_upstream_cannot_map(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [rule("a", "pump-1"), rule("b", "pump-7"), rule("p", pattern="fan*")],
                 GOOD)
    code = main(["check", "--config", str(path)])
    err = capsys.readouterr().err
    rules = tmp_path / "rules.d" / "r.toml"
    line_b = next(i for i, t in enumerate(rules.read_text().splitlines(), 1) if 'id = "b"' in t)
    assert code == 1
    assert (f"{rules}:{line_b - 1}: asset 'pump-7': rule 'b': upstream 'sap' (SAP) has no "
            "technical object for it") in err
    assert "asset_pattern 'fan*' cannot be listed before data arrives" in err  # warning
    assert "warning: " in err and "asset 'line2.fan-1': no rule watches this asset" in err


def test_without_a_registry_unmapped_assets_only_warn(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [rule("b", "pump-7")], None)
    assert main(["check", "--config", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err


def test_check_reports_a_broken_registry_beside_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [rule("a", "pump-1")], GOOD.replace('quantity = 2', 'quantity = "2x"'))
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'assets.toml'}:9: asset 'pump-1': spare_parts.BEARING[0].quantity: " \
           "must be a number, not '2x'" in err
    assert "cannot map" not in err and "has no technical object" not in err
    assert "1 problem(s)" in err


def test_the_example_registry_loads() -> None:
    reg = load_registry(REPO / "config" / "assets.toml")
    assert reg.line_of("pump-1") == "line-2"
    assert len(reg.spare_parts("pump-1", "BEARING")) == 2
