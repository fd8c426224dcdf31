"""Planting a bug in a rule kind, for the tests of what a failing rule costs (nothing but itself).

The rule kinds may be compiled (rules/native.py): patching a method on the class would then not
reach the engine's native calls, and the test would pass without testing anything. So the bug
goes into a Python subclass, which rules/build.py then builds for every rule of that kind; the
compiled classes allow such subclasses (`mypyc_attr(allow_interpreted_subclasses=True)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rules.build


def plant(monkeypatch: pytest.MonkeyPatch, kind: str, **methods: Callable[..., Any]) -> type:
    """Make rules/build.py build `kind` (a class name: "BadQualityRule") as a subclass whose
    `methods` replace the real ones (the real one: `getattr(base, name)(self, ...)`)."""
    base = getattr(rules.build, kind)
    planted = type(f"Planted{kind}", (base,), dict(methods))
    monkeypatch.setattr(rules.build, kind, planted)
    return planted
