"""`plantbridge check` for technicians: every problem in one pass, lines, plain words, scoped
secrets, and rules that no source can feed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.cli import main
from tests.gateway.recorder import mqtt_config
from tests.harness import Mosquitto

RULE = """
[[rule]]
id = "{id}"
kind = "threshold"
asset = "{asset}"
signal = "{signal}"
above = 7.1
clear_below = {clear}
"""

MQTT = """
[[sources]]
type = "mqtt"
name = "plant"
port = 1883
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
"""

UPSTREAM = """
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{url}"
auth = {{ kind = "bearer", token = {{ env = "PB_TEST_UNSET_TOKEN" }} }}
"""


def rule(id: str = "vib", asset: str = "pump-1", signal: str = "vibration",
         clear: float = 6.0) -> str:
    return RULE.format(id=id, asset=asset, signal=signal, clear=clear)


def write(tmp: Path, rules: dict[str, str], source: str = MQTT,
          url: str = "http://127.0.0.1:9/") -> Path:
    (tmp / "rules.d").mkdir(exist_ok=True)
    for name, text in rules.items():
        (tmp / "rules.d" / name).write_text(text)
    path = tmp / "plantbridge.toml"
    path.write_text(f'[gateway]\nstate_dir = "{tmp}"\n\n[rules]\nfiles = ["rules.d/*.toml"]\n'
                    f"{source}{UPSTREAM.format(url=url)}")
    return path


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    got = capsys.readouterr()
    return code, got.out, got.err


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PB_TEST_UNSET_TOKEN", raising=False)


def test_every_problem_of_every_file_in_one_pass(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The main file is broken, a rule is broken, and the two copies of 'dup' are broken too:
    # before, check showed only the main file, then the rule, then (third round) the duplicate.
    path = write(tmp_path, {"a.toml": rule("dup", clear=7.5) + rule("ok"),
                            "b.toml": rule("dup", clear=9.0)},
                 source=MQTT.replace("port = 1883", "port = 1883\nprot = 1"))
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1
    assert f"plantbridge.toml:{line_of(path, 'prot = 1')}: sources[0] 'plant': prot: " \
           "unknown key" in err
    assert "upstreams[0] 'cmms': auth.token: environment variable PB_TEST_UNSET_TOKEN" in err
    assert "a.toml:8: rule 'dup': clear_below: clear level 7.5 is above" in err
    assert "b.toml:8: rule 'dup': clear_below: clear level 9" in err
    assert "b.toml:2: rule 'dup': id: duplicate rule id; first defined at " \
           f"{tmp_path / 'rules.d' / 'a.toml'}:2" in err
    assert "5 problem(s)" in err, err
    # The main file's own problems come first, then the rule files'.
    assert err.index("PB_TEST_UNSET_TOKEN") < err.index("a.toml:8")


def test_main_config_problems_have_lines_and_plain_words(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"a.toml": rule()}, url="cmms.local/api",
                 source=MQTT.replace("port = 1883", 'port = "eighty"'))
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1
    port_line, url_line = line_of(path, '"eighty"'), line_of(path, "cmms.local")
    assert (f"plantbridge.toml:{port_line}: sources[0] 'plant': port: must be a port number "
            "from 1 to 65535, without quotes, not 'eighty'") in err
    assert (f"plantbridge.toml:{url_line}: upstreams[0] 'cmms': base_url: base_url "
            "'cmms.local/api' needs a scheme: http://... or https://...") in err
    assert "^https?" not in err  # no bare regex


def test_a_rule_file_error_does_not_hide_main_config_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"a.toml": "[[rule]\n"},
                 source=MQTT.replace("port = 1883", "port = 70000"))
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1 and "a.toml:1: not valid TOML" in err and "port: must be at most" in err


def test_rules_only_needs_no_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"a.toml": rule()})
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1 and "PB_TEST_UNSET_TOKEN is not set" in err  # a plain check still says
    code, out, err = check(capsys, "--config", str(path), "--rules-only")
    assert code == 0, err
    assert "rules ok: 1 rule (1 rule instance: one per rule and asset)" in out
    code, out, err = check(capsys, "--rules-only", "--rules",
                           str(tmp_path / "rules.d" / "a.toml"))
    assert code == 0 and "ok: 1 rule file(s), 1 rule" in out, err


def test_rules_only_still_reports_rule_problems(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"a.toml": rule(clear=7.5) + rule()})
    code, _, err = check(capsys, "--config", str(path), "--rules-only")
    assert code == 1 and "clear level 7.5" in err and "duplicate rule id" in err
    assert "PB_TEST_UNSET_TOKEN" not in err
    code, _, err = check(capsys, "--rules-only", "--rules", str(tmp_path / "rules.d" / "a.toml"))
    assert code == 1 and "clear level 7.5" in err and "duplicate rule id" in err


def test_rules_without_rules_only_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(capsys, "--rules", "x.toml")
    assert code == 2 and "--rules goes with --rules-only" in err


def test_source_secrets_only_for_record(tmp_path: Path) -> None:
    path = write(tmp_path, {"a.toml": rule()})
    with pytest.raises(config_mod.ConfigError, match="PB_TEST_UNSET_TOKEN"):
        config_mod.load(path)
    loaded = config_mod.load(path, secrets=config_mod.SecretScope.SOURCES)
    assert loaded.config.upstreams[0].name == "cmms"
    source_secret = MQTT.replace('name = "plant"', 'name = "plant"\nusername = "u"\n'
                                 'password = { env = "PB_TEST_UNSET_TOKEN" }')
    path = write(tmp_path, {"a.toml": rule()}, source=source_secret)
    with pytest.raises(config_mod.ConfigError, match=r"sources\[0\] 'plant': password"):
        config_mod.load(path, secrets=config_mod.SecretScope.SOURCES)


def test_config_error_has_a_one_line_form(tmp_path: Path) -> None:
    path = write(tmp_path, {"a.toml": rule(clear=7.5)},
                 source=MQTT.replace("port = 1883", "port = 0"))
    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.load(path)
    text = str(caught.value)
    assert "\n" not in text and len(caught.value.problems) == 3
    assert text == caught.value.one_line() == "; ".join(map(str, caught.value.problems))


def test_record_does_not_need_the_upstream_token(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A technician records telemetry with no CMMS token around: the upstream is not used."""
    cfg = mqtt_config(tmp_path, mosquitto.port)
    cfg.write_text(cfg.read_text() + UPSTREAM.format(url="http://127.0.0.1:9/"))
    env = {k: v for k, v in os.environ.items() if k != "PB_TEST_UNSET_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "record", "--config", str(cfg),
                           "--output", str(tmp_path / "rec.jsonl"), "--duration", "0.5"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "recorded 0 samples" in proc.stdout


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda t: t.replace('[gateway]', '[gateway]\nlog_level = "verbose"'),
     "gateway.log_level: must be one of 'debug', 'info', 'warning' or 'error', not 'verbose'"),
    (lambda t: t.replace('port = 1883', 'port = 1883\nkeepalive_seconds = "30s"'),
     "keepalive_seconds: must be a whole number, not '30s'"),
    (lambda t: t.replace('base_url = "http://127.0.0.1:9/"', 'base_url = "http://a b/"'),
     "base_url: base_url 'http://a b/' must be http:// or https:// and a host (and port)"),
    (lambda t: t.replace('files = ["rules.d/*.toml"]', 'files = "rules.d/*.toml"'),
     "rules.files: must be a list in brackets"),
])
def test_validator_messages_are_reworded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           mutate: object, expected: str) -> None:
    path = write(tmp_path, {"a.toml": rule()})
    path.write_text(mutate(path.read_text()))  # type: ignore[operator]
    code, _, err = check(capsys, "--config", str(path))
    assert code == 1 and expected in err, err
    assert "Input should" not in err and "errors.pydantic.dev" not in err
