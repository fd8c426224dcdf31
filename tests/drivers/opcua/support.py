"""Helpers of the OPC UA suite: a plant config, a sample collector."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from drivers.opcua.config import OpcUaSourceConfig
from drivers.opcua.driver import OpcUaSource
from gateway.model import Sample, Source
from simulators import scenario
from simulators.opcua_plant import OpcUaPlantSimulator, node_id_text

SimFactory = Callable[..., Awaitable[OpcUaPlantSimulator]]


def plant_config(endpoint: str, nodes: list[dict[str, Any]] | None = None,
                 **overrides: Any) -> OpcUaSourceConfig:
    """Every plant signal, fast intervals, quick reconnects: what most tests want."""
    if nodes is None:
        nodes = [{"asset": a, "signal": s, "node_id": node_id_text(a, s)}
                 for a in scenario.ASSETS for s in scenario.SIGNALS]
    raw: dict[str, Any] = {
        "name": "plc-1", "endpoint": endpoint, "nodes": nodes,
        "groups": {"default": {"publishing_interval_ms": 100, "sampling_interval_ms": 50}},
        "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 1.0,
        "keepalive_interval_seconds": 0.5, "request_timeout_seconds": 2.0,
    }
    raw.update(overrides)
    return OpcUaSourceConfig.model_validate(raw)


class Collector:
    """Consumes a source's batches in the background, like the gateway would."""

    def __init__(self, source: Source) -> None:
        self.samples: list[Sample] = []
        self.batches = 0
        self._task = asyncio.create_task(self._run(source))

    async def _run(self, source: Source) -> None:
        async for batch in source.batches():
            self.batches += 1
            self.samples.extend(batch.samples)

    def of(self, asset: str, signal: str) -> list[Sample]:
        return [s for s in self.samples if s.asset == asset and s.signal == signal]

    def keys(self) -> set[tuple[str, str]]:
        return {(s.asset, s.signal) for s in self.samples}

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def running(cfg: OpcUaSourceConfig) -> AsyncIterator[tuple[OpcUaSource, Collector]]:
    async with cfg.build() as source:
        collector = Collector(source)
        try:
            yield source, collector
        finally:
            await collector.stop()
