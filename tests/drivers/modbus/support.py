"""Helpers of the Modbus suite: configs for the plant simulator, a batch collector."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.modbus.config import ModbusSourceConfig
from drivers.modbus.driver import ModbusSource
from gateway.model import Quality, Sample

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "source-modbus.toml"


def example_raw(port: int) -> dict[str, Any]:
    with EXAMPLE.open("rb") as f:
        raw: dict[str, Any] = tomllib.load(f)["sources"][0]
    raw["port"] = port
    return raw


def plant_config(port: int, *, interval_ms: int = 100, timeout_seconds: float = 0.2,
                 **overrides: Any) -> ModbusSourceConfig:
    """The example register map, polled fast for tests."""
    raw = example_raw(port)
    for dev in raw["devices"]:
        dev.update(poll_interval_ms=interval_ms, timeout_seconds=timeout_seconds,
                   backoff_max_seconds=1.0)
    raw.update(overrides)
    return ModbusSourceConfig.model_validate(raw)


@dataclass
class Collected:
    """Every batch a source produced, with the loop time it arrived."""

    batches: list[tuple[float, list[Sample]]] = field(default_factory=list)

    def latest(self, asset: str, signal: str) -> Sample | None:
        for _t, samples in reversed(self.batches):
            for s in samples:
                if s.asset == asset and s.signal == signal:
                    return s
        return None

    def all_good(self, assets: tuple[str, ...], signals: tuple[str, ...]) -> bool:
        got = [self.latest(a, s) for a in assets for s in signals]
        return all(g is not None and g.quality is Quality.GOOD for g in got)

    def polls(self, asset: str, start: float, end: float) -> int:
        """Batches (one per device poll) about `asset` that arrived in [start, end)."""
        return sum(1 for t, samples in self.batches
                   if start <= t < end and samples and samples[0].asset == asset)

    def samples(self) -> list[Sample]:
        return [s for _t, batch in self.batches for s in batch]


@contextlib.asynccontextmanager
async def collecting(source: ModbusSource) -> AsyncIterator[Collected]:
    out = Collected()
    loop = asyncio.get_running_loop()

    async def pump() -> None:
        async for batch in source.batches():
            out.batches.append((loop.time(), list(batch.samples)))

    async with source:
        task = asyncio.create_task(pump())
        try:
            yield out
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
