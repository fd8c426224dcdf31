"""The install an edge box gets (`pip install .`, README "Deploy with systemd") where it has no
C compiler: a working pure Python install that says why it is not compiled, never a failed one.
(With a compiler, the dev install of this very tree is the compiled case:
tests/rules/test_native.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = ["pyproject.toml", "setup.py", "README.md", "gateway", "drivers", "buffer", "rules",
           "simulators"]


@pytest.mark.slow
def test_without_a_c_compiler_the_install_is_pure_python_and_says_so(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    for name in PACKAGE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.so", "_native.json"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    env = dict(os.environ, CC="/bin/false")  # the compiler "fails", as a missing one does
    env.pop("PLANTBRIDGE_PURE_PYTHON", None)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"),
                            str(tree)], env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("plantbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rules/engine.py" in names and "rules/_native.json" in names
    assert not [n for n in names if n.endswith(".so")]
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                                "--disable-pip-version-check", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    ran = subprocess.run([sys.executable, "-c",
                          "import rules, rules.native as n, rules.engine as e; "
                          "print(n.describe()); print(e.__file__)"],
                         cwd=tmp_path, env=dict(env, PYTHONPATH=str(site)),
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    said, engine = ran.stdout.splitlines()
    assert said == "pure Python (rules/episode was not compiled (see the install log))"
    assert Path(engine) == site / "rules" / "engine.py"
