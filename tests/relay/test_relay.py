"""The relay as a real process between JetStream and the CMMS simulator."""

from __future__ import annotations

import asyncio
import sys

import nats

from gateway.messages import messages_for
from gateway.model import OutboxRecord, Outcome, TransitionKind
from tests.harness import wait_for
from tests.relay.conftest import SinkMaker
from tests.relay.fleetstack import (
    Fleet,
    RelayProc,
    assert_once_each,
    episode_records,
    transition,
)


async def publish_all(sink_maker: SinkMaker, n: int) -> None:
    got = await sink_maker().send(episode_records(n))
    assert all(d.outcome is Outcome.ACCEPTED for d in got), [d.reason for d in got]


async def test_one_request_per_episode_through_a_kill9_of_the_relay(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    episodes = 20
    await publish_all(gateway_sink, episodes)
    relay = fleet.relay("r1", in_flight=4)
    relay.start()
    await wait_for(lambda: len(fleet.sim.requests) >= 4, 30, "some requests delivered",
                   interval=0.01)
    relay.kill()  # mid-run: some events sent and not acked, some acked, some not taken
    assert len(fleet.sim.requests) < episodes, "the kill came too late to test anything"
    relay.start()
    await relay.wait_ready()
    await fleet.wait_delivered(episodes)
    assert_once_each(fleet.sim, episodes)


async def test_two_relays_share_one_consumer_and_one_dies_mid_delivery(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    episodes = 30
    a, b = fleet.relay("ra", in_flight=4), fleet.relay("rb", in_flight=4)
    a.start()
    b.start()
    await a.wait_ready()
    await b.wait_ready()
    await publish_all(gateway_sink, episodes)
    await wait_for(lambda: len(fleet.sim.requests) >= 6, 30, "some requests delivered",
                   interval=0.01)
    a.kill()  # what it had in flight comes back to b after ack_wait
    await fleet.wait_delivered(episodes)
    assert_once_each(fleet.sim, episodes)
    st = await b.status()
    assert st is not None and st["upstreams"][0]["accepted"] > 0


async def test_a_clear_that_arrives_first_waits_for_its_raise(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    raise_, clear = episode_records(1)
    sink = gateway_sink()
    relay = fleet.relay("r1")
    relay.start()
    await relay.wait_ready()
    [d] = await sink.send([clear])  # as if another gateway path reordered them
    assert d.outcome is Outcome.ACCEPTED
    await wait_for(lambda: counted(relay, "nacked"), 20, "the clear to be held back")
    assert not fleet.sim.status_updates
    [d] = await sink.send([raise_])
    await fleet.wait_delivered(1)
    assert_once_each(fleet.sim, 1)


async def counted(relay: RelayProc, what: str) -> bool:
    st = await relay.status()
    return st is not None and st[what] >= 1


async def test_a_foreign_message_goes_to_the_dead_letter_stream(fleet: Fleet) -> None:
    relay = fleet.relay("r1")
    relay.start()
    await relay.wait_ready()
    nc = await nats.connect(fleet.servers[0], allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.publish("plantbridge.site-a.main.pump-1.raised", b"not json")
        await wait_for(lambda: counted(relay, "dead"), 20, "the dead letter", interval=0.1)
        msg = await js.get_msg("PLANTBRIDGE_DLQ", 1)
        assert msg.headers is not None
        assert "not a PlantBridge event" in msg.headers["PB-Dead-Reason"]
        assert msg.subject == "plantbridge-dlq.plantbridge.site-a.main.pump-1.raised"
        assert not fleet.sim.requests
    finally:
        await nc.close()


async def test_the_fleet_view_lists_gateways_by_heartbeat(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    relay = fleet.relay("r1")
    relay.start()
    await relay.wait_ready()
    gateway_sink(gateway_id="edge-7", heartbeat_seconds=0.2)

    async def seen() -> bool:
        st = await relay.status()
        return st is not None and any(g["gateway_id"] == "edge-7" for g in st["fleet"])

    await wait_for(seen, 20, "edge-7 in the fleet view", interval=0.1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "relay", "--config", str(relay.config), "--fleet",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    line = next(x for x in out.decode().splitlines() if x.startswith("edge-7"))
    assert "site-a" in line and line.endswith("ok")


async def test_a_missing_hub_stream_stops_the_relay_in_plain_words(fleet: Fleet) -> None:
    relay = fleet.relay("r1", stream="NOPE")
    relay.start()
    assert relay.proc is not None
    code = await asyncio.to_thread(relay.proc.wait, 30)
    assert code == 2
    assert "stream 'NOPE' does not exist" in relay.log()


async def relay_cli(relay: RelayProc, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "relay", "--config", str(relay.config), *args,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out
    return out.decode()


async def test_refused_events_are_dead_lettered_and_requeued_once(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    fleet.sim.faults.set("error_5xx", count=1, status=422, match_body="pump-0")
    relay = fleet.relay("r1")
    relay.start()
    await relay.wait_ready()
    got = await gateway_sink().send(episode_records(1))
    assert all(d.outcome is Outcome.ACCEPTED for d in got)
    # the raise is refused for good; its clear then has no request to update
    await wait_for(lambda: dead_count(relay, 2), 20, "both dead-lettered")
    listing = await relay_cli(relay, "--dead-letters")
    assert "plantbridge.site-a.main.pump-0.raised  cmms  HTTP 422" in listing, listing
    assert "no upstream reference" in listing
    assert not fleet.sim.requests
    said = await relay_cli(relay, "--requeue", "1")
    assert "1: requeued to plantbridge.site-a.main.pump-0.raised" in said
    await wait_for(lambda: len(fleet.sim.requests) == 1, 20, "the requeued raise")
    await relay_cli(relay, "--requeue", "2")
    await fleet.wait_delivered(1)
    assert_once_each(fleet.sim, 1)
    assert (await relay_cli(relay, "--dead-letters")).strip() == "no dead letters"


async def dead_count(relay: RelayProc, n: int) -> bool:
    st = await relay.status()
    return st is not None and st["dead"] >= n


async def test_an_event_still_failing_after_max_deliver_goes_to_the_dead_letters(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    fleet.sim.faults.set("error_5xx", status=503, retry_after=None)  # until cleared
    relay = fleet.relay("r1", max_deliver=3)
    relay.start()
    await relay.wait_ready()
    [raise_, _] = episode_records(1)
    [d] = await gateway_sink().send([raise_])
    assert d.outcome is Outcome.ACCEPTED
    await wait_for(lambda: dead_count(relay, 1), 30, "the dead letter after 3 deliveries")
    listing = await relay_cli(relay, "--dead-letters")
    assert "gave up after 3 deliveries" in listing and "503" in listing, listing
    st = await relay.status()
    assert st is not None and st["upstreams"][0]["retried"] == 3 and st["nacked"] == 2


async def test_events_queued_behind_their_asset_are_not_handed_to_another_relay(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    """Four raises of one asset wait in one lane behind a slow EAM for longer than ack_wait:
    the relay keeps them (in_progress), so none is redelivered meanwhile."""
    fleet.sim.faults.set("slow", delay_seconds=0.8)
    relay = fleet.relay("r1", ack_wait_seconds=1.5)
    relay.start()
    await relay.wait_ready()
    recs = []
    for i in range(4):
        t = transition(TransitionKind.RAISED, "pump-1", f"slow-{i}", 1_790_000_000.0 + i)
        msg = messages_for(t, ["backbone"], "site-a")[0]
        recs.append(OutboxRecord(id=i + 1, message=msg, attempts=0))
    got = await gateway_sink().send(recs)
    assert all(d.outcome is Outcome.ACCEPTED for d in got)
    await wait_for(lambda: len(fleet.sim.requests) == 4, 30, "the four requests")
    st = await relay.status()
    assert st is not None and st["redelivered"] == 0 and st["received"] == 4, st
