"""Fixtures for the rule tests: rule files written on the fly, samples made short."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.model import Quality, Sample
from rules import RuleSet, load_rule_files

RulesFrom = Callable[[str], RuleSet]


def sample(asset: str, signal: str, value: float | None, ts: float,
           quality: Quality | None = None) -> Sample:
    if quality is None:
        quality = Quality.GOOD if value is not None else Quality.BAD
    return Sample(asset, signal, value, quality, ts)


@pytest.fixture
def rules_from(tmp_path: Path) -> RulesFrom:
    """Write TOML text to a fresh file and load it."""
    counter = iter(range(1000))

    def load(text: str) -> RuleSet:
        path = tmp_path / f"rules-{next(counter)}.toml"
        path.write_text(text)
        return load_rule_files([path])

    return load
