"""The daemon and its MQTT worker processes run the collector with the same young generation."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from drivers.mqtt import worker
from gateway import cli_base


@pytest.fixture
def restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_run_async_tunes_the_collector(restore_thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)

    async def young() -> int:
        return gc.get_threshold()[0]

    assert cli_base.run_async(young()) == cli_base.GC_YOUNG_OBJECTS > 700


def test_the_worker_uses_the_daemons_threshold() -> None:
    assert vars(worker)["_GC_YOUNG_OBJECTS"] == cli_base.GC_YOUNG_OBJECTS
    # the worker must not import cli_base (it loads every config model): checked in a fresh
    # interpreter, since this one has imported everything already
    code = ("import sys, drivers.mqtt.worker; "
            "print('gateway.cli_base' in sys.modules, 'gateway.config' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert got.stdout.split() == ["False", "False"]
