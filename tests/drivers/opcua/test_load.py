"""10,000 monitored items on one endpoint: all created, all delivering."""

from __future__ import annotations

import time

import pytest

from gateway.model import SourceState
from simulators.opcua_plant import NAMESPACE_URI
from tests.drivers.opcua.support import SimFactory, plant_config, running
from tests.harness import wait_for

N = 10_000


@pytest.mark.slow
async def test_ten_thousand_items_all_created_and_delivering(make_sim: SimFactory) -> None:
    t0 = time.monotonic()
    sim = await make_sim(extra_variables=N, extra_interval_ms=1000,
                         max_monitored_items_per_call=2000)
    t_sim = time.monotonic() - t0
    nodes = [{"asset": f"load-{i // 100}", "signal": f"s{i % 100}",
              "node_id": f"nsu={NAMESPACE_URI};s=load.{i}"} for i in range(N)]
    cfg = plant_config(sim.endpoint, nodes, groups={"default": {
        "publishing_interval_ms": 200, "sampling_interval_ms": 100}},
        # server and client share one loop here: give the session probe room under load
        keepalive_interval_seconds=3.0, request_timeout_seconds=10.0,
        max_monitored_items_per_call=5000)  # the server's 2,000 wins
    t1 = time.monotonic()
    async with running(cfg) as (source, got):
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30,
                       "all items created")
        t_created = time.monotonic() - t1
        assert source.failed_items() == {}
        assert source.create_calls == 5
        rounds = sim.load_rounds
        await wait_for(lambda: len(got.keys()) == N, 30, f"all {N} nodes reporting "
                       f"(got {len(got.keys())})")
        t_all = time.monotonic() - t1
        # ...and still changing: every node reports a value written after subscribing.
        await wait_for(lambda: len({(s.asset, s.signal) for s in got.samples
                                    if s.value is not None and s.value > rounds + 1}) == N,
                       30, "every node delivering new values")
        print(f"\n10k items: simulator up {t_sim:.1f} s, items created {t_created:.1f} s, "
              f"all reporting {t_all:.1f} s, {len(got.samples)} samples")
