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


# Run the long tests first: on xdist workers a 30 s crash trial that starts last keeps the whole
# run waiting while the other workers idle. Order only; what runs is unchanged.
_HEAVY_DIRS = ("e2e", "chaos", "relay", "browser", "systemd")


def _cost_class(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    parts = item.path.relative_to(item.config.rootpath).parts  # ("tests", "e2e", "test_x.py")
    return 1 if len(parts) > 2 and parts[1] in _HEAVY_DIRS else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_cost_class)  # stable: collection order within a class
