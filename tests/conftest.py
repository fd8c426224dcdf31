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
# The crash trials count an episode as published by the plant's own clock; with four of them
# at once on a loaded 2-core box, daemon restarts took longer than a HIGH phase and episodes
# went unraised ("missing"). They run one after another on one worker (`--dist loadgroup`).
_ONE_WORKER_DIRS = {"chaos": "crash-trials"}


def _suite(item: pytest.Item) -> str | None:
    parts = item.path.relative_to(item.config.rootpath).parts  # ("tests", "e2e", "test_x.py")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else None


def _cost_class(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if _suite(item) in _HEAVY_DIRS else 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _ONE_WORKER_DIRS.get(_suite(item) or "")
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_cost_class)  # stable: collection order within a class
