"""`plantbridge record`: capture live samples from the configured sources as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson

from gateway.config import PlantBridgeConfig
from gateway.model import Source


async def record(cfg: PlantBridgeConfig, output: Path, duration_seconds: float) -> int:
    """Write one line per sample ({asset, signal, value, quality, ts}); ack nothing upstream."""
    count = 0
    with output.open("wb") as out:

        async def pump(src: Source) -> None:
            nonlocal count
            async with src:
                async for batch in src.batches():
                    for s in batch.samples:
                        out.write(orjson.dumps({"asset": s.asset, "signal": s.signal,
                                                "value": s.value, "quality": s.quality.name,
                                                "ts": s.source_ts}) + b"\n")
                        count += 1
                    if batch.ack is not None:
                        batch.ack()

        tasks = [asyncio.create_task(pump(s.build())) for s in cfg.sources]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), duration_seconds)
    return count
