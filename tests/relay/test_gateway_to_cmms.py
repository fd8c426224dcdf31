"""The whole path: a real gateway (rules, outbox, nats upstream) → JetStream → relay → CMMS."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import Mosquitto, wait_for
from tests.relay.fleetstack import STREAM, Fleet, assert_once_each


def nats_upstream(fleet: Fleet) -> str:
    servers = ", ".join(f'"{s}"' for s in fleet.servers)
    return f"""
[[upstreams]]
type = "nats"
name = "backbone"
servers = [{servers}]
stream = "{STREAM}"
area = "line-1"
heartbeat_seconds = 0.5
request_timeout_seconds = 2
"""


async def test_gateway_to_cmms_once_per_episode_through_a_relay_kill9(
        tmp_path: Path, mosquitto: Mosquitto, fleet: Fleet) -> None:
    stack = Stack(tmp_path, mosquitto, fleet.sim)
    stack.write_config(vibration_rule(), upstream=nats_upstream(fleet))
    relay = fleet.relay("r1", in_flight=2)
    relay.start()
    try:
        await stack.start_daemon()
        await relay.wait_ready()
        assets = [f"pump-{i}" for i in range(6)]
        await stack.play_many(assets[:3], [3.0] * 2 + [8.0] * 14 + [3.0] * 14)
        relay.kill()  # the first episodes are in flight or done; the rest wait in the stream
        await stack.play_many(assets[3:], [3.0] * 2 + [8.0] * 14 + [3.0] * 14)
        await stack.settled()  # the gateway's outbox is empty: all is in JetStream
        relay.start()
        await fleet.wait_delivered(len(assets))
        assert_once_each(fleet.sim, len(assets))
        assert sorted(r["body"]["asset"] for r in fleet.sim.requests) == assets

        async def gateway_listed() -> bool:
            st = await relay.status()
            return st is not None and any(g["gateway_id"] == "e2e" for g in st["fleet"])

        await wait_for(gateway_listed, 20, "the gateway in the relay's fleet view")
    finally:
        stack.close()
        await stack.stop_daemon()
