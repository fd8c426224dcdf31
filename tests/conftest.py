"""Fixtures every suite may use. Suites put their own fixtures in their own conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Mosquitto, running_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh real Mosquitto broker on a free port for one test."""
    with running_mosquitto(tmp_path) as broker:
        yield broker
