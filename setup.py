"""Build hook: compile the rule engine's per-sample path with mypyc where the machine can.

Everything else is in pyproject.toml. The compiled modules are the same source (rules/native.py
says which modules and how the running one is chosen); without mypyc or a C compiler, or with
PLANTBRIDGE_COMPILE=0, the package installs as pure Python and runs the same, slower.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _native() -> Any:
    """rules/native.py alone (standard library only): which modules, the manifest's name, the
    digest, from the one place the running engine reads them too."""
    spec = importlib.util.spec_from_file_location("_plantbridge_native",
                                                  HERE / "rules" / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _native()
GROUP = "plantbridge_rules"  # mypyc's shared library: plantbridge_rules__mypyc
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _forget_old_build() -> None:
    """A build that fails must not leave the last one's modules to shadow newer source."""
    (HERE / "rules" / NATIVE.MANIFEST).unlink(missing_ok=True)
    for pattern in [f"rules/{name}.*.so" for name in NATIVE.MODULES] + [f"{GROUP}__mypyc.*.so"]:
        for old in HERE.glob(pattern):
            old.unlink()


def ext_modules() -> list[Any]:
    if not BUILDS & set(sys.argv[1:]):
        return []  # metadata only (pip asks several times): compiling would be wasted
    _forget_old_build()
    if os.environ.get("PLANTBRIDGE_COMPILE", "1") == "0":
        return []
    sources = [f"rules/{name}.py" for name in NATIVE.MODULES]
    try:
        from mypyc.build import mypycify

        # The project's strict mypy config is for development; the build environment lacks
        # the third-party packages, whose types are then Any.
        exts = mypycify(["--config-file=", "--ignore-missing-imports", *sources],
                        group_name=GROUP)
    except (Exception, SystemExit) as exc:  # no mypyc, or it refused the code
        print(f"plantbridge: the rule engine stays pure Python ({exc!r})", file=sys.stderr)
        return []
    for ext in exts:
        ext.optional = True  # no C compiler: the pure Python engine, not a failed install
    digests = {f"rules.{name}": NATIVE.source_digest(HERE / "rules" / f"{name}.py")
               for name in NATIVE.MODULES}
    (HERE / "rules" / NATIVE.MANIFEST).write_text(json.dumps(digests, indent=1) + "\n")
    return exts


setup(ext_modules=ext_modules())
