"""Crash trials for the backbone, longer than the suite can afford. Two modes:

- `--mode replay` (the default): gateway → JetStream → two relays → CMMS simulator, with kill -9
  of a relay, of the nats-server, and a gateway "restart" (its outbox replays everything not
  settled, under the same ids) at random moments, many episodes per trial.
- `--mode kill`: the real processes (tests/relay/killtrials.py): `plantbridge run` with real
  Mosquitto, the nats-server and `plantbridge relay`, each killed with SIGKILL at seeded random
  moments of an episode and restarted; one episode per trial, one shared stack for all.

Each trial checks: every episode has exactly one request and one clear at the CMMS.

    .venv/bin/python -m tests.relay.run_trials --trials 20
    .venv/bin/python -m tests.relay.run_trials --trials 5 --episodes 200 --seed 7
    .venv/bin/python -m tests.relay.run_trials --mode kill --trials 200 --seed 7
    .venv/bin/python -m tests.relay.run_trials --mode kill --trials 50 --kills 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from gateway.model import OutboxRecord, Outcome
from gateway.upstream.nats_config import NatsSinkConfig
from simulators.cmms import CmmsSimulator
from tests.harness import running_mosquitto
from tests.relay.fleetstack import (
    API_KEY,
    STREAM,
    Fleet,
    add_hub_stream,
    assert_once_each,
    episode_records,
)
from tests.relay.killtrials import KillTrials
from tests.upstream.nats.natsserver import NatsServer, require_nats_server


async def publish_until_settled(url: str, records: list[OutboxRecord],
                                replay: asyncio.Event) -> int:
    """What a gateway's forwarder does: send until each record settles, retrying under the
    same id. A `replay` starts over from the first record, as a gateway killed before it could
    settle what it sent would. Returns the number of replays."""
    replays = 0
    sink = NatsSinkConfig.model_validate({
        "type": "nats", "name": "backbone", "servers": [url], "stream": STREAM,
        "site": "trial", "heartbeat_seconds": 0, "request_timeout_seconds": 1,
        "connect_timeout_seconds": 1, "reconnect_wait_seconds": 0.2}).build()
    try:
        pending = list(records)
        while pending:
            if replay.is_set():
                replay.clear()
                replays += 1
                await sink.aclose()
                pending = list(records)
            got = await sink.send(pending[:4])  # a trickle, so chaos lands mid-publishing
            await asyncio.sleep(0.05)
            settled = {d.record_id for d in got if d.outcome is Outcome.ACCEPTED}
            assert not any(d.outcome is Outcome.REJECTED for d in got), got
            pending = [r for r in pending if r.id not in settled]
            if len(settled) < len(got):
                await asyncio.sleep(0.1)
    finally:
        await sink.aclose()
    return replays


async def trial(n: int, episodes: int, rng: random.Random) -> str:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = NatsServer(tmp)
        server.start()
        sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
        await sim.start()
        fleet = Fleet(tmp, [server.url], sim)
        try:
            await add_hub_stream(server.url)
            relays = [fleet.relay(f"r{i}", in_flight=8, ack_wait_seconds=3) for i in (1, 2)]
            for r in relays:
                r.start()
            replay = asyncio.Event()
            records = episode_records(episodes, site="trial", prefix=f"t{n}")
            publisher = asyncio.create_task(publish_until_settled(server.url, records, replay))
            chaos: list[str] = []
            deadline = time.monotonic() + 120
            while len(sim.requests) + len(sim.status_updates) < 2 * episodes:
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- {r.name}:\n{r.log()[-1500:]}" for r in relays)
                    raise AssertionError(
                        f"not delivered in time after {chaos}: {len(sim.requests)} requests, "
                        f"{len(sim.status_updates)} clears, publisher done: "
                        f"{publisher.done()}\n{logs}")
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                if len(chaos) >= 4:
                    continue
                what = rng.choice(["relay", "nats", "gateway"])
                chaos.append(what)
                if what == "relay":
                    victim = rng.choice(relays)
                    victim.kill()
                    victim.start()
                elif what == "nats":
                    server.stop(signal.SIGKILL)
                    server.start()
                else:
                    replay.set()
            replays = await asyncio.wait_for(publisher, 60)
            assert_once_each(sim, episodes)
            return (f"trial {n}: ok, {episodes} episodes once each; chaos {chaos}, "
                    f"{replays} gateway replay(s)")
        finally:
            fleet.stop_all()
            await sim.stop()
            server.stop()


async def kill_trials(trials: int, seed: int, stop_on_failure: bool, kills: int) -> int:
    """`--mode kill`: the real gateway, relay and nats-server processes; returns failures."""
    failed = 0
    with tempfile.TemporaryDirectory() as d, running_mosquitto(Path(d)) as broker:
        sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
        await sim.start()
        try:
            async with KillTrials(Path(d), broker, sim, seed, kills) as kt:
                for n in range(1, trials + 1):
                    try:
                        r = await kt.trial(n)
                        print(f"trial {n}: ok, {r}", flush=True)
                    except AssertionError as exc:
                        failed += 1
                        print(f"trial {n}: FAILED: {exc}", flush=True)
                        if stop_on_failure:
                            break
                await kt.drained()
                try:
                    kt.check_all()
                except AssertionError as exc:
                    failed += 1
                    print(f"after the drain: FAILED: {exc}", flush=True)
        finally:
            await sim.stop()
    return failed


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["replay", "kill"], default="replay")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--kills", type=int, default=1, choices=[1, 2, 3],
                   help="--mode kill: processes killed per trial, each at its own moment")
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop-on-failure", action="store_true")
    args = p.parse_args()
    require_nats_server()
    logging.basicConfig(level=logging.ERROR)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    if args.mode == "kill":
        failed = await kill_trials(args.trials, seed, args.stop_on_failure, args.kills)
        print(f"{args.trials - failed} passed, {failed} failed")
        return 1 if failed else 0
    failed = 0
    for n in range(1, args.trials + 1):
        try:
            print(await trial(n, args.episodes, rng), flush=True)
        except AssertionError as exc:
            failed += 1
            print(f"trial {n}: FAILED: {exc}", flush=True)
            if args.stop_on_failure:
                break
    print(f"{args.trials - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
