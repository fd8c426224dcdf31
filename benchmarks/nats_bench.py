"""NATS backbone throughput and latency on this box, with a real nats-server (JetStream, file
storage) on loopback.

1. direct: outbox records → the nats upstream → JetStream, in forwarder-sized batches;
   events/s and per-publish latency (send to PubAck) p50/p99.
2. relay: events already in the stream → `plantbridge relay` (a real subprocess) → the CMMS
   simulator (REST, Idempotency-Key); events/s for a burst, and end-to-end latency (PubAck to
   the request stored at the simulator) at a steady paced rate, p50/p99. `--relay-rate R` puts
   the relay under a fleet-wide rate (gateway/relay/ratelimit.py) of R/s.
3. limiter: the fleet-wide rate limiter's own ceiling: slots reserved per second through the
   KV bucket (compare-and-set per slot) by one and by two clients racing, with a rate far above
   what they reach, and the races lost; p50/p99 of one reservation.

Prints figures, asserts nothing.

    .venv/bin/python benchmarks/nats_bench.py
    .venv/bin/python benchmarks/nats_bench.py --direct 20000 --relay 2000 --paced-rate 50
    .venv/bin/python benchmarks/nats_bench.py --direct 0 --relay 500 --relay-rate 10000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.js.api import KeyValueConfig, StreamConfig  # noqa: E402
from nats.js.kv import KeyValue  # noqa: E402

from gateway.model import Delivery, OutboxRecord, Outcome  # noqa: E402
from gateway.relay.ratelimit import FleetRateLimit  # noqa: E402
from gateway.upstream.lanes import send_in_episode_lanes  # noqa: E402
from gateway.upstream.nats import NatsSink  # noqa: E402
from gateway.upstream.nats_config import NatsSinkConfig  # noqa: E402
from simulators.cmms import CmmsSimulator  # noqa: E402
from tests.harness import wait_for  # noqa: E402
from tests.relay.fleetstack import (  # noqa: E402
    API_KEY,
    STREAM,
    Fleet,
    add_hub_stream,
    episode_records,
)
from tests.upstream.nats.natsserver import NatsServer  # noqa: E402

BATCH = 50  # the forwarder's default batch_size


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_sink(url: str, gateway_id: str, stream: str = STREAM,
              prefix: str = "plantbridge") -> NatsSink:
    return NatsSinkConfig.model_validate({
        "type": "nats", "name": "backbone", "servers": [url], "stream": stream,
        "subject_prefix": prefix, "site": "bench", "gateway_id": gateway_id,
        "heartbeat_seconds": 0}).build()


async def direct(url: str, events: int) -> None:
    # a stream of its own: these events are not for the relay stage
    nc = await nats.connect(url, allow_reconnect=False)
    await nc.jetstream().add_stream(StreamConfig(name="DIRECT", subjects=["direct.>"],
                                                 duplicate_window=7 * 86400.0))
    await nc.close()
    sink = make_sink(url, "direct", "DIRECT", "direct")
    records = episode_records(events // 2, ts=1_700_000_000.0, prefix="direct")
    latencies: list[float] = []

    async def timed(rec: OutboxRecord) -> Delivery:
        t0 = time.perf_counter()
        d = await sink.send_one(rec)
        latencies.append(time.perf_counter() - t0)
        return d

    await sink.send(records[:2])  # connect and look the stream up outside the timing
    t0 = time.perf_counter()
    for i in range(0, len(records), BATCH):
        got = await send_in_episode_lanes(records[i:i + BATCH], timed, 64)
        assert all(d.outcome is Outcome.ACCEPTED for d in got)
    took = time.perf_counter() - t0
    await sink.aclose()
    print(f"direct: {len(records)} events to JetStream in {took:.2f} s = "
          f"{len(records) / took:,.0f} events/s; publish latency p50 "
          f"{pct(latencies, .5) * 1000:.1f} ms, p99 {pct(latencies, .99) * 1000:.1f} ms "
          f"(batches of {BATCH})")


def _stored_at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def relay_stage(tmp: Path, url: str, episodes: int, paced_rate: float,
                      paced_seconds: float, relay_rate: float | None = None) -> None:
    sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
    await sim.start()
    fleet = Fleet(tmp, [url], sim)
    extra = "" if relay_rate is None else f"[rate_limits.cmms]\nrate_per_second = {relay_rate}\n"
    relay = fleet.relay("bench-relay", extra=extra, in_flight=64, fetch_batch=64,
                        max_ack_pending=256)
    try:
        # burst: the whole backlog is in the stream when the relay starts
        sink = make_sink(url, "burst")
        backlog = episode_records(episodes, ts=1_710_000_000.0, prefix="burst")
        for chunk in range(0, len(backlog), BATCH):
            await sink.send(backlog[chunk:chunk + BATCH])
        relay.start()
        await relay.wait_ready()
        await wait_for(lambda: len(sim.requests) + len(sim.status_updates) >= 2 * episodes,
                       300, "the burst at the simulator", interval=0.05)
        stamps = sorted(_stored_at(x["created_at"]) for x in sim.requests + sim.status_updates)
        took = stamps[-1] - stamps[0]  # first to last arrival: the relay's start-up left out
        limited = "" if relay_rate is None else f", under a fleet rate of {relay_rate:g}/s"
        print(f"relay burst: {2 * episodes} events (raise + clear per episode) stream → relay "
              f"→ CMMS in {took:.2f} s = {2 * episodes / took:,.0f} events/s{limited}")
        # paced: raises at a steady rate, latency from PubAck to stored at the simulator
        sink2 = make_sink(url, "paced")
        total = int(paced_rate * paced_seconds)
        recs = [r for r in episode_records(total, ts=1_720_000_000.0, prefix="paced")
                if r.message.kind.value == "maintenance_request"]
        acked_at: dict[str, float] = {}
        start = time.time()
        for i, rec in enumerate(recs):
            await asyncio.sleep(max(0.0, start + i / paced_rate - time.time()))
            [d] = await sink2.send([rec])
            assert d.outcome is Outcome.ACCEPTED
            acked_at[str(rec.message.body["dedup_key"])] = time.time()
        deadline = time.time() + 60
        seen: dict[str, float] = {}
        while len(seen) < len(acked_at) and time.time() < deadline:
            seen = {r["external_ref"]: _stored_at(r["created_at"]) for r in sim.requests
                    if r["external_ref"] in acked_at}
            await asyncio.sleep(0.05)
        lat = [seen[k] - acked_at[k] for k in seen]
        print(f"relay paced: {len(recs)} raises at {paced_rate:g}/s, PubAck → stored at the "
              f"CMMS: p50 {pct(lat, .5) * 1000:.0f} ms, p99 {pct(lat, .99) * 1000:.0f} ms, "
              f"mean {statistics.mean(lat) * 1000:.0f} ms ({len(seen)}/{len(recs)} arrived)")
        await sink.aclose()
        await sink2.aclose()
    finally:
        fleet.stop_all()
        await sim.stop()


def _unreachable_rate(kv: KeyValue) -> FleetRateLimit:
    return FleetRateLimit(lambda: kv, "bench", 1e9, 1e9)


async def _reserve(lim: FleetRateLimit, n: int, latencies: list[float]) -> None:
    for _ in range(n):
        t = time.perf_counter()
        await lim.acquire()
        latencies.append(time.perf_counter() - t)


async def limiter(url: str, reservations: int) -> None:
    """Slots per second the shared bucket gives, with one client and with two racing."""
    for clients in (1, 2):
        conns = [await nats.connect(url, allow_reconnect=False) for _ in range(clients)]
        try:
            js = conns[0].jetstream()
            bucket = f"bench_limits_{clients}"
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
            kvs = [await nc.jetstream().key_value(bucket) for nc in conns]
            # a rate far above reach: every reservation is granted at once, so this measures
            # the compare-and-set round trips and the races, not the waiting
            limits = [_unreachable_rate(kv) for kv in kvs]
            each = reservations // clients
            lat: list[float] = []
            t0 = time.perf_counter()
            await asyncio.gather(*(_reserve(lim, each, lat) for lim in limits))
            took = time.perf_counter() - t0
            lost = sum(lim.lost_races for lim in limits)
            fell_back = sum(lim.granted_local for lim in limits)
            print(f"limiter: {clients} client(s), {each * clients} slots in {took:.2f} s = "
                  f"{each * clients / took:,.0f} slots/s; one reservation p50 "
                  f"{pct(lat, .5) * 1000:.2f} ms, p99 {pct(lat, .99) * 1000:.2f} ms; "
                  f"{lost} races lost, {fell_back} local fallbacks")
        finally:
            for nc in conns:
                await nc.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--direct", type=int, default=10000, help="events published directly")
    p.add_argument("--relay", type=int, default=500, help="episodes through the relay")
    p.add_argument("--paced-rate", type=float, default=50.0, help="raises/s, paced run")
    p.add_argument("--paced-seconds", type=float, default=5.0)
    p.add_argument("--relay-rate", type=float, default=None,
                   help="a fleet-wide rate for the relay's upstream (default: none)")
    p.add_argument("--limiter", type=int, default=2000,
                   help="slots reserved in the limiter stage (0: skip it)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the 2.9 version warnings are known here
    with tempfile.TemporaryDirectory() as d:
        server = NatsServer(Path(d))
        server.start()
        try:
            await add_hub_stream(server.url)
            if args.direct:
                await direct(server.url, args.direct)
            if args.relay:
                await relay_stage(Path(d), server.url, args.relay, args.paced_rate,
                                  args.paced_seconds, args.relay_rate)
            if args.limiter:
                await limiter(server.url, args.limiter)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
