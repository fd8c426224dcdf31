"""Which rule engine runs: the modules below compiled with mypyc, or the same source as Python.

The per-sample path (rule kinds and `RuleEngine.evaluate`) is compiled by mypyc when the
package is built (setup.py): the same source, with native attributes and direct method calls,
about twice as many evaluations per CPU second (issue 14). The build writes `MANIFEST`: the
SHA-256 of each source it compiled. The compiled module is used only when it was built from
the source beside it, so an edited rule kind is never shadowed by a stale build; otherwise,
or when there is no compiler, or with PLANTBRIDGE_PURE_PYTHON=1 in the environment, the
Python source runs (same results: tests/rules/test_native.py). `describe()` says which, and
why; the daemon logs it at start and the status page shows it.

This module must stay pure Python and import nothing outside the standard library: setup.py
loads it by path for `MODULES`, `MANIFEST` and `source_digest`. Imported as `rules.native`
(rules/__init__.py does that first) it decides at once (`choose()`); loaded by setup.py under
another name it decides nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType

MODULES = ("episode", "threshold", "watch", "engine")  # what setup.py compiles, as rules.<name>
MANIFEST = "_native.json"  # {"rules.<name>": sha256 of its source}, written by the build
PURE_ENV = "PLANTBRIDGE_PURE_PYTHON"
_HERE = Path(__file__).resolve().parent


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _why_not_compiled(here: Path) -> str | None:
    """None when every module has a build made from its current source; else the reason."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    try:
        built = json.loads((here / MANIFEST).read_text())
    except FileNotFoundError:
        return "not built (no C compiler or mypyc at install, or PLANTBRIDGE_COMPILE=0)"
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST}: {exc}"
    for name in MODULES:
        if not any((here / f"{name}{suffix}").exists()
                   for suffix in EXTENSION_SUFFIXES):
            return f"rules/{name} was not compiled (see the install log)"
        if built.get(f"rules.{name}") != source_digest(here / f"{name}.py"):
            return f"rules/{name}.py changed since it was compiled: run scripts/setup again"
    return None


class _FromSource:
    """A finder that loads `rules.<name>` from its .py file even where a build lies beside it."""

    def __init__(self, here: Path) -> None:
        self._paths = {f"rules.{name}": here / f"{name}.py" for name in MODULES}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        source = self._paths.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(
            fullname, source)


REASON: str | None = "not decided"  # set by `choose()`
COMPILED = False


def choose() -> None:
    """Decide, before any of `MODULES` is imported: run at the import of `rules.native`."""
    global REASON, COMPILED
    REASON = _why_not_compiled(_HERE)
    COMPILED = REASON is None
    if not COMPILED and any(f"rules.{name}" in sys.modules for name in MODULES):
        raise ImportError("rules.native.choose() must run before the modules it chooses")
    if not COMPILED:
        sys.meta_path.insert(0, _FromSource(_HERE))


def describe() -> str:
    """One line for the log and the status page."""
    if COMPILED:
        return "compiled (mypyc)"
    return f"pure Python ({REASON})"


def loaded_compiled() -> bool:
    """Whether the running engine really is the compiled one (for tests and the benchmark)."""
    engine = sys.modules.get("rules.engine")
    return engine is not None and not str(engine.__file__).endswith(".py")


if __name__ == "rules.native":
    choose()
