"""Three nats-servers as a JetStream cluster on loopback, an R3 hub stream, one server stopped
mid-run: nothing lost, nothing doubled at the CMMS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from gateway.model import Outcome
from gateway.upstream.nats_config import NatsSinkConfig
from simulators.cmms import CmmsSimulator
from tests.harness import wait_for
from tests.relay.fleetstack import STREAM, Fleet, add_hub_stream, assert_once_each, episode_records
from tests.upstream.nats.natsserver import NatsServer, cluster, require_nats_server


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[NatsServer]]:
    require_nats_server()
    nodes = cluster(tmp_path)
    for n in nodes:
        n.start()
    try:
        yield nodes
    finally:
        for n in nodes:
            n.stop()


async def stream_leader(url: str) -> str:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = await nc.jetstream(timeout=5).stream_info(STREAM)
        assert info.cluster is not None
        return str(info.cluster.leader)
    finally:
        await nc.close()


# Three servers, a relay and a daemon on 2 cores: under a loaded box it timed out once in the
# full suite (90 s), alone it takes 15-20 s. Kept out of make test: scripts/test -m trial.
@pytest.mark.trial
async def test_r3_stream_loses_nothing_when_its_leader_stops(
        tmp_path: Path, three: list[NatsServer], sim: CmmsSimulator) -> None:
    urls = [n.url for n in three]

    async def created() -> bool:  # until the cluster has elected its meta leader
        try:
            await add_hub_stream(urls[0], replicas=3)
        except (nats.errors.Error, OSError):
            return False
        return True

    await wait_for(created, 30, "the R3 stream created", interval=0.5)
    fleet = Fleet(tmp_path, urls, sim)
    sink = NatsSinkConfig.model_validate({
        "type": "nats", "name": "backbone", "servers": urls, "stream": STREAM, "site": "site-a",
        "heartbeat_seconds": 0, "request_timeout_seconds": 2,
        "reconnect_wait_seconds": 0.2}).build()
    try:
        relay = fleet.relay("r1", in_flight=4, replicas=3)
        relay.start()
        await relay.wait_ready()
        records = episode_records(20)
        first = await sink.send(records[:24])  # episodes 0..11
        assert all(d.outcome is Outcome.ACCEPTED for d in first)
        leader = await stream_leader(urls[0])
        victim = next(n for n in three if n.name == leader)
        victim.stop()  # mid-run: the relay is still forwarding the first half
        pending = list(records[24:])  # episodes 12..19, published after the stop

        async def published() -> bool:
            nonlocal pending
            got = await sink.send(pending)
            pending = [r for r, d in zip(pending, got, strict=True)
                       if d.outcome is not Outcome.ACCEPTED]
            return not pending

        await wait_for(published, 45, "the second half published to the new leader",
                       interval=0.5)
        await fleet.wait_delivered(20, timeout=90)
        assert_once_each(sim, 20)
    finally:
        await sink.aclose()
        fleet.stop_all()
