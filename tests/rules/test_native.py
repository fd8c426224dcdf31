"""The compiled rule engine (rules/native.py): chosen only when built from the current source,
and the same results as the Python source it was compiled from."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rules import native

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"


def built() -> bool:
    """Whether the install compiled the engine in this tree (scripts/setup does, given gcc)."""
    return (RULES_DIR / native.MANIFEST).exists() and all(
        any((RULES_DIR / f"{name}{suffix}").exists()
            for suffix in importlib.machinery.EXTENSION_SUFFIXES) for name in native.MODULES)


def run(code: str, *, pure: bool = False, path: Path = REPO) -> str:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    if pure:
        env[native.PURE_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(path), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", code], cwd=path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


WHICH = ("import rules, rules.native as n, rules.watch as w; "
         "print(n.describe()); print(n.loaded_compiled()); print(w.__file__)")


def test_the_choice_is_what_runs() -> None:
    """Built from this source: the compiled modules run; otherwise the Python source, and the
    reason is given. Either way `describe` tells the truth."""
    assert native.loaded_compiled() == native.COMPILED
    if built() and not os.environ.get(native.PURE_ENV):
        assert native.describe() == "compiled (mypyc)"
    else:
        assert native.describe().startswith("pure Python (")


def test_the_environment_can_ask_for_the_python_source() -> None:
    said, compiled, where = run(WHICH, pure=True).splitlines()
    assert said == f"pure Python ({native.PURE_ENV} is set)"
    assert (compiled, Path(where)) == ("False", RULES_DIR / "watch.py")


def test_an_edited_module_is_not_shadowed_by_its_old_build(tmp_path: Path) -> None:
    """A technician never edits these, but a developer does: after an edit without a rebuild,
    the build beside the source is stale and must not run (it would run the old code)."""
    copy = tmp_path / "tree"
    shutil.copytree(RULES_DIR, copy / "rules",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", native.MANIFEST))
    digests = {f"rules.{name}": native.source_digest(copy / "rules" / f"{name}.py")
               for name in native.MODULES}
    (copy / "rules" / native.MANIFEST).write_text(json.dumps(digests))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in native.MODULES:  # stand-ins: importing one would fail loudly
        (copy / "rules" / f"{name}{suffix}").write_bytes(b"not a module")
    with (copy / "rules" / "watch.py").open("a") as f:
        f.write("\nEDITED = True\n")
    said, compiled, where = run(WHICH + "; print(w.EDITED)", path=copy).splitlines()[:3]
    assert said == ("pure Python (rules/watch.py changed since it was compiled: run "
                    "scripts/setup again)")
    assert (compiled, Path(where)) == ("False", copy / "rules" / "watch.py")


DIGEST = """
import hashlib, msgpack, sys
sys.path.insert(0, '.')
from benchmarks.rules_bench import assets, load, samples
from rules import RuleEngine
import rules.native as n

names = assets(120)
engine = RuleEngine(load(names), journal_samples=0)  # every changed state, every second
# (a set gives them, in an order that differs from run to run: sorted below)
out = hashlib.sha256()
seen = 0
per_second = len(names) * 4
for i, s in enumerate(samples(names, 1500)):
    for t in engine.evaluate(s):
        out.update(repr(t).encode())
        seen += 1
    if (i + 1) % per_second == 0:
        for t in engine.tick(s.source_ts + 0.5):
            out.update(repr(t).encode())
            seen += 1
        for state in sorted(engine.take_dirty(), key=lambda st: (st.rule_id, st.asset)):
            out.update(msgpack.packb([state.rule_id, state.asset, state.data]))
print(n.loaded_compiled(), seen, out.hexdigest())
"""


@pytest.mark.skipif(not built(), reason="the engine is not compiled in this tree")
def test_compiled_and_python_give_the_same_transitions_and_state() -> None:
    """The benchmark's plant (every rule kind, episodes raised and cleared) for 25 minutes:
    every transition and every stored state byte for byte the same either way."""
    compiled = run(DIGEST).split()
    pure = run(DIGEST, pure=True).split()
    assert (compiled[0], pure[0]) == ("True", "False")
    assert int(pure[1]) > 20  # episodes raised and cleared, not a quiet plant
    assert compiled[1:] == pure[1:]

