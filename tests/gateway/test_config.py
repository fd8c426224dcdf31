"""`plantbridge check`: valid configs pass, each kind of mistake is named precisely."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.cli import main
from gateway.valid_range import RangedSource, build_source

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.toml"))

RULE = """
[[rule]]
id = "{id}"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
clear_below = {clear}
"""

BASE = """
[gateway]
state_dir = "{state}"

[rules]
files = ["rules.d/*.toml"]

[[sources]]
type = "mqtt"
name = "plant"
port = {port}
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"

[[upstreams]]
type = "rest"
name = "cmms"
base_url = "http://127.0.0.1:9/"
"""


def _write(tmp: Path, main_text: str, rules: dict[str, str]) -> Path:
    (tmp / "rules.d").mkdir(exist_ok=True)
    for name, text in rules.items():
        (tmp / "rules.d" / name).write_text(text)
    path = tmp / "plantbridge.toml"
    path.write_text(main_text)
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_valid_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE.format(state=tmp_path, port=1883),
                  {"a.toml": RULE.format(id="vib", clear=6.0)})
    code, out, err = _check(path, capsys)
    assert code == 0, err
    assert "ok: 1 source(s), 1 upstream(s), 1 rule file(s)" in out


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t.replace('name = "plant"', 'name = "plant"\nprot = 1'),
         "sources[0] 'plant': prot: unknown key"),
        (lambda t: t.replace("port = 1883", 'port = "eighty"'),
         "sources[0] 'plant': port: must be a port number from 1 to 65535, without quotes"),
        (lambda t: t.replace('type = "rest"', 'type = "soap"'), "unknown type 'soap'"),
        (lambda t: t.replace("[gateway]", "[gateway]\nsite = 12"), "gateway.site"),
        (lambda t: t.replace('files = ["rules.d/*.toml"]', 'files = ["missing/*.toml"]'),
         "'missing/*.toml' matches no rule file"),
        (lambda t: t + "\n[[sources]]\ntype = \"mqtt\"\nname = \"plant\"\n"
                       "[[sources.subscriptions]]\npattern = \"x/+asset/+signal\"\n",
         "sources[1] 'plant': name: duplicate name"),
        (lambda t: t.replace("[gateway]", "[gateway\n"), "not valid TOML"),
    ],
)
def test_broken_main_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     mutate: object, expected: str) -> None:
    text = mutate(BASE.format(state=tmp_path, port=1883))  # type: ignore[operator]
    path = _write(tmp_path, text, {"a.toml": RULE.format(id="vib", clear=6.0)})
    code, _, err = _check(path, capsys)
    assert code == 1
    assert expected in err
    assert str(path) in err or "rules" in expected


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path / "nope.toml", capsys)
    assert code == 1
    assert "nope.toml: file not found" in err


def test_duplicate_rule_id_across_files(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE.format(state=tmp_path, port=1883),
                  {"a.toml": RULE.format(id="vib", clear=6.0),
                   "b.toml": RULE.format(id="vib", clear=6.0)})
    code, _, err = _check(path, capsys)
    assert code == 1
    assert "b.toml" in err and "rule 'vib'" in err and "a.toml" in err


def test_rule_level_mistake_names_file_rule_and_field(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE.format(state=tmp_path, port=1883),
                  {"a.toml": RULE.format(id="vib", clear=7.5)})
    code, _, err = _check(path, capsys)
    assert code == 1
    assert "a.toml" in err and "rule 'vib'" in err and "clear_below" in err
    assert "clear level 7.5 is above the alarm level 7.1" in err


def test_unreadable_secret_is_a_config_problem(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.format(state=tmp_path, port=1883).replace(
        'base_url = "http://127.0.0.1:9/"',
        'base_url = "http://127.0.0.1:9/"\nauth = { kind = "bearer", token = { env = "PB_NOPE" } }')
    path = _write(tmp_path, text, {"a.toml": RULE.format(id="vib", clear=6.0)})
    code, _, err = _check(path, capsys)
    assert code == 1
    assert "upstreams[0] 'cmms': auth.token: environment variable PB_NOPE is not set" in err


def test_run_refuses_a_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, BASE.format(state=tmp_path, port=1883) + "\nbogus = 1\n",
                  {"a.toml": RULE.format(id="vib", clear=6.0)})
    assert main(["run", "--config", str(path)]) == 1
    assert "refusing to start" in capsys.readouterr().err


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_loads_and_builds(tmp_path: Path, example: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each commented example in config/examples/ is valid and builds its component."""
    for var in ("PLANTBRIDGE_MQTT_PASSWORD", "PLANTBRIDGE_SAP_PASSWORD",
                "PLANTBRIDGE_MAXIMO_API_KEY"):
        monkeypatch.setenv(var, "s3cret")
    text = example.read_text().replace("/etc/plantbridge/secrets/", f"{tmp_path}/")
    for name in ("cmms-token", "mqtt-password", "opcua-password", "api-key"):
        (tmp_path / name).write_text("s3cret\n")
    raw = tomllib.loads(text)
    raw.setdefault("gateway", {})["state_dir"] = str(tmp_path)
    raw["rules"] = {"files": [str(ROOT / "config" / "rules.d" / "*.toml")]}
    cfg = config_mod.validate(raw, str(example))
    assert config_mod.secret_problems(cfg, str(example)) == []
    built = [c.build() for c in (*cfg.sources, *cfg.upstreams)]
    assert built, f"{example.name} defines no source or upstream"
    assert all(hasattr(b, "name") for b in built)
    for src in cfg.sources:  # as the daemon builds them: valid ranges wrap the driver
        running = build_source(src)
        assert isinstance(running, RangedSource) == bool(src.valid_ranges)
        assert running.name == src.name
    if example.name.startswith("source-"):  # each source kind shows its valid ranges
        assert any(src.valid_ranges for src in cfg.sources), example.name


def test_the_main_example_and_rules_check(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    (tmp_path / "cmms-token").write_text("t0ken\n")  # as systemd's LoadCredential= would
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    code, out, err = _check(ROOT / "config" / "plantbridge.toml", capsys)
    assert code == 0, err
    assert "7 rules (4 rule instances: one per rule and asset; 5 pattern rules add one per " \
           "matching asset that reports)" in out
