"""Secret sources: systemd credentials, and change detection for reloads."""

from __future__ import annotations

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
