"""Throughput of the UNS sink: outbox records to PUBACKed events plus coalesced state.

Run: .venv/bin/python -m tests.upstream.uns.bench_uns [events] [batch]
Starts its own Mosquitto on a free port; prints events/s and per-batch latency (p50, p99).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.model import Outcome, TransitionKind
from tests.harness import Mosquitto, free_port
from tests.upstream.uns.conftest import uns_config, uns_record


async def main(events: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(free_port(), Path(tmp), persistence=True)
        broker.start()
        try:
            sink = uns_config(broker.port).build()
            records = [uns_record(TransitionKind.RAISED, f"asset-{i % 50}", f"ep-{i}")
                       for i in range(events)]
            await sink.send(records[:1])  # connect and read the state back first
            latencies = []
            t0 = time.perf_counter()
            for i in range(1, events, batch_size):
                b0 = time.perf_counter()
                got = await sink.send(records[i:i + batch_size])
                latencies.append(time.perf_counter() - b0)
                assert all(d.outcome is Outcome.ACCEPTED for d in got), got
            took = time.perf_counter() - t0
            await sink.aclose()
        finally:
            broker.stop()
    q = statistics.quantiles(latencies, n=100)
    print(f"{events - 1} events in batches of {batch_size} over 50 assets: "
          f"{(events - 1) / took:.0f} events/s; batch latency p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5001
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    asyncio.run(main(n, size))
