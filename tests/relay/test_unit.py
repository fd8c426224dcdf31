"""systemd/plantbridge-relay.service: verifies cleanly and is as tightly sandboxed as the
gateway's own unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "plantbridge-relay.service"
INSTALLED_BIN = "/opt/plantbridge/.venv/bin/plantbridge"


def _installed_here(tmp_path: Path, edit: str = "") -> Path:
    """The unit with ExecStart= on this venv's entry point (verify checks it exists)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = UNIT.read_text()
    assert INSTALLED_BIN in text
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BIN,
                                                   str(Path(sys.executable).parent /
                                                       "plantbridge")) + edit)
    return tmp_path


def _run(tmp_path: Path, *args: str) -> str:
    got = subprocess.run(["systemd-analyze", *args, UNIT.name], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, check=False)
    return f"exit {got.returncode}\n{got.stdout}{got.stderr}".strip()


def test_the_relay_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    assert _run(_installed_here(tmp_path), "verify") == "exit 0"


def test_verify_notices_a_broken_relay_unit(tmp_path: Path) -> None:
    said = _run(_installed_here(tmp_path, "[Service]\nPrivateDevices=maybe\n"), "verify")
    assert "Failed to parse boolean value" in said, said


def test_the_relay_unit_exposure_is_at_most_two(tmp_path: Path) -> None:
    report = _run(_installed_here(tmp_path), "security", "--offline=yes")
    found = re.search(r"Overall exposure level for plantbridge-relay\.service: (\d+\.\d+)", report)
    assert found, report
    assert float(found.group(1)) <= 2.0, report
