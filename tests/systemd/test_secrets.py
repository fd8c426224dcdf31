"""Secret sources: systemd credentials, and change detection for reloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Secret


def test_a_credential_is_read_from_the_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cmms-token").write_text("s3cret\n")  # as `echo s3cret > file` leaves it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert Secret(credential="cmms-token").reveal() == "s3cret"


def test_outside_systemd_a_credential_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ValueError, match="not running under systemd with "
                                         "LoadCredential=cmms-token"):
        Secret(credential="cmms-token").reveal()


def test_a_credential_missing_from_the_directory_names_the_unit_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ValueError, match="LoadCredential=cmms-token:/etc/plantbridge/secrets/"):
        Secret(credential="cmms-token").reveal()


@pytest.mark.parametrize("name", ["../etc/shadow", "a/b", "", ".."])
def test_a_credential_name_is_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError, match="plain name"):
        Secret(credential=name)


def test_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one of credential, file, env or value"):
        Secret(credential="x", file=tmp_path / "x")
    with pytest.raises(ValidationError, match="exactly one"):
        Secret()


def test_a_changed_file_makes_the_loaded_secret_unequal(tmp_path: Path) -> None:
    """What a reload relies on: same file, new content -> a different config object."""
    path = tmp_path / "token"
    path.write_text("wrong")
    before = Secret(file=path)
    assert Secret(file=path) == before  # unchanged content: nothing to restart
    path.write_text("right")
    after = Secret(file=path)
    assert after != before and after.model_dump() == before.model_dump()
    assert after.reveal() == "right"


def test_an_unreadable_secret_loads_and_changes_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "token"
    missing = Secret(file=path)  # `check` reports it; loading must not raise
    with pytest.raises(ValueError, match="cannot read secret file"):
        missing.reveal()
    path.write_text("now here")
    assert Secret(file=path) != missing


def test_the_fingerprint_does_not_show_the_secret(tmp_path: Path) -> None:
    s = Secret(value="hunter2")
    assert "hunter2" not in s.fingerprint and "hunter2" not in repr(s)
    assert len(s.fingerprint) == 64


def test_an_empty_credential_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit's `SetCredential=cmms-token:\\n` default when the real file was missing."""
    (tmp_path / "cmms-token").write_text("\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ValueError, match="credential 'cmms-token' is empty"):
        Secret(credential="cmms-token").reveal()


CHECK_CONFIG = """
[gateway]
site = "t"
state_dir = "{state}"

[rules]
files = ["rules.d/*.toml"]

[[upstreams]]
type = "rest"
name = "cmms"
base_url = "http://127.0.0.1:9"
auth = {{ kind = "bearer", token = {{ credential = "cmms-token" }} }}
"""

RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
clear_below = 6.0
"""


def _check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_check_outside_systemd_names_the_upstream_field_and_the_fix(tmp_path: Path) -> None:
    """`plantbridge check` as the ExecStartPre= line and as an admin in a shell run it."""
    config = tmp_path / "plantbridge.toml"
    config.write_text(CHECK_CONFIG.format(state=tmp_path / "state"))
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "rules.toml").write_text(RULE)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    got = _check(config, env)
    assert got.returncode == 1
    assert ("upstreams[0] 'cmms': auth.token: credential 'cmms-token': not running under "
            "systemd with LoadCredential=cmms-token") in got.stdout + got.stderr

    creds = tmp_path / "credentials"  # what systemd sets up for LoadCredential=
    creds.mkdir()
    (creds / "cmms-token").write_text("t0ken\n")
    got = _check(config, {**env, "CREDENTIALS_DIRECTORY": str(creds)})
    assert got.returncode == 0, got.stdout + got.stderr
