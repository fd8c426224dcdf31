"""The files in systemd/ checked by systemd's own tools, without a running systemd.

`systemd-analyze verify` and `security --offline=yes` read unit files directly;
`systemd-sysusers --root` and `systemd-tmpfiles --root` apply our files to a scratch root. Each
check is skipped, with the reason, only where the tool itself is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "plantbridge.service"
INSTALLED_BIN = "/opt/plantbridge/.venv/bin/plantbridge"
MAX_EXPOSURE = 3.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd)")
    return path


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


def _unit_dir(tmp_path: Path, *, serial: bool = False, edit: str = "") -> Path:
    """The unit as it would be installed, with its commands pointing at binaries that exist here.

    verify checks that ExecStart= and friends are executable; /opt/plantbridge does not exist on
    a build machine, so the install path is rewritten to this venv's own `plantbridge` entry
    point (the same program, so the command lines are still checked for real). Nothing else
    changes. `edit` appends a line to the [Service] section of the drop-in directory."""
    venv_bin = Path(sys.executable).parent / "plantbridge"
    assert venv_bin.exists(), f"{venv_bin} missing: run scripts/setup"
    text = UNIT.read_text()
    assert INSTALLED_BIN in text
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BIN, str(venv_bin)))
    dropins = tmp_path / f"{UNIT.name}.d"
    dropins.mkdir()
    if serial:
        shutil.copy(SYSTEMD_DIR / "serial-modbus.conf", dropins / "serial-modbus.conf")
    if edit:
        (dropins / "zz-edit.conf").write_text(f"[Service]\n{edit}\n")
    return tmp_path


def _verify(unit_dir: Path) -> str:
    got = _run(_tool("systemd-analyze"), "verify", UNIT.name, cwd=unit_dir)
    return f"exit {got.returncode}\n{got.stdout}{got.stderr}".strip()


def _exposure(unit_dir: Path) -> tuple[float, str]:
    got = _run(_tool("systemd-analyze"), "security", "--offline=yes", UNIT.name, cwd=unit_dir)
    report = got.stdout + got.stderr
    found = re.search(r"Overall exposure level for plantbridge\.service: (\d+\.\d+)", report)
    assert found, f"no overall exposure in systemd-analyze's output:\n{report}"
    return float(found.group(1)), report


@pytest.mark.parametrize("serial", [False, True], ids=["unit", "unit+serial-drop-in"])
def test_unit_verifies_without_a_single_warning(tmp_path: Path, serial: bool) -> None:
    assert _verify(_unit_dir(tmp_path, serial=serial)) == "exit 0"


def test_verify_does_notice_a_broken_setting(tmp_path: Path) -> None:
    """The check above can fail: a bad value in a drop-in is reported."""
    said = _verify(_unit_dir(tmp_path, edit="PrivateDevices=maybe"))
    assert "Failed to parse boolean value" in said, said


@pytest.mark.parametrize("serial", [False, True], ids=["unit", "unit+serial-drop-in"])
def test_exposure_is_at_most_three(tmp_path: Path, serial: bool) -> None:
    score, report = _exposure(_unit_dir(tmp_path, serial=serial))
    assert score <= MAX_EXPOSURE, report


def test_exposure_score_moves_with_the_settings(tmp_path: Path) -> None:
    """Dropping the system call filter and the capability set raises the score: the number
    above is measured on our unit, not a constant."""
    ours, _ = _exposure(_unit_dir(tmp_path / "a"))
    weaker, report = _exposure(_unit_dir(tmp_path / "b", edit="SystemCallFilter=\n"
                                                               "CapabilityBoundingSet=~"))
    assert weaker > ours + 1.0, report


def test_serial_drop_in_opens_one_port_and_the_dialout_group(tmp_path: Path) -> None:
    _, report = _exposure(_unit_dir(tmp_path, serial=True))
    assert re.search(r"DeviceAllow=.*/dev/ttyUSB0:rw", report), report
    assert re.search(r"✗ SupplementaryGroups=", report), report


def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a user and chown-ing directories in a scratch root needs root")


def test_sysusers_and_tmpfiles_lay_out_the_install(tmp_path: Path) -> None:
    _as_root()
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    got = _run(sysusers, f"--root={root}", str(SYSTEMD_DIR / "plantbridge.sysusers"))
    assert got.returncode == 0, got.stderr
    [entry] = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
               if line.startswith("plantbridge:")]
    uid, gid, home, shell = int(entry[2]), int(entry[3]), entry[5], entry[6]
    assert uid < 1000 and home == "/var/lib/plantbridge" and shell.endswith("nologin")

    # Twice: the second run must find everything in place and change nothing.
    for _ in range(2):
        got = _run(tmpfiles, f"--root={root}", "--create",
                   str(SYSTEMD_DIR / "plantbridge.tmpfiles"))
        assert got.returncode == 0, got.stderr
    expected = {"etc/plantbridge": (0, gid), "etc/plantbridge/rules.d": (0, gid),
                "etc/plantbridge/secrets": (0, gid), "var/lib/plantbridge": (uid, gid)}
    for rel, (owner, group) in expected.items():
        st = (root / rel).stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid) == (oct(0o750), owner, group), rel


def test_tmpfiles_tightens_a_directory_an_admin_left_open(tmp_path: Path) -> None:
    """An existing world-readable secrets directory (made with mkdir -p) is fixed."""
    _as_root()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert _run(_tool("systemd-sysusers"), f"--root={root}",
                str(SYSTEMD_DIR / "plantbridge.sysusers")).returncode == 0
    secrets = root / "etc/plantbridge/secrets"
    secrets.mkdir(parents=True)
    secrets.chmod(0o755)
    got = _run(_tool("systemd-tmpfiles"), f"--root={root}", "--create",
               str(SYSTEMD_DIR / "plantbridge.tmpfiles"))
    assert got.returncode == 0, got.stderr
    assert secrets.stat().st_mode & 0o7777 == 0o750
